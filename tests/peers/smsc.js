// An SMSC for the tests, on the npm package `smpp` (an implementation independent of ours) in server mode.
// Configured by one JSON argument; reports what it receives as JSON lines on stdout.
//   port, system_id, password       where it listens and whom it binds
//   receipt_delay_ms                delay of the delivery receipt after the submit_sm_resp
//   receipts_first                  send the receipt before the submit_sm_resp
//   id_form                         "dec" (default), "hex-dec" (hex in the resp, decimal in the receipt),
//                                   "padded" (leading zeros in the resp only), "restart-at-zero"
//   receipt_tlvs                    add receipted_message_id and message_state TLVs
//   throttle_first                  answer ESME_RTHROTTLED to the first N submit_sm
//   drop_after                      drop the connection on the Nth submit_sm (unanswered)
//   silent_after                    never answer submit_sm after the Nth
//   response_delay_ms               delay of each submit_sm_resp
//   refuse_binds                    answer ESME_RBINDFAIL to the first N binds (an SMSC restarting)
//   reject_prefix, undeliverable_prefix   destinations refused (ESME_RINVDSTADR) / reported UNDELIV
//   intermediate                    send an ENROUTE receipt before the final one
//   receipts_by_prefix              {prefix: [{stat, esm_class, delay_ms}]}: for destinations starting with a
//                                   prefix, these receipts instead of the usual one (esm_class 4 unless given,
//                                   each delay_ms after the first)
// Events name the session (numbered by bind) a submit came on and a receipt went out on.
//   quiet                           no line per submit_sm or receipt (benchmarks); SIGUSR2 prints the counts
//   mo                              incoming SMS to deliver after the first receiving bind:
//                                   [{source, dest, text, parts}] (parts > 1: concatenated with a UDH)
// Each line written to its stdin, an MO in the form of `mo`'s entries, is delivered at once (on the receiving
// bind there is): a test says when the phone answers.
'use strict';
const smpp = require('smpp');

const cfg = JSON.parse(process.argv[2] || '{}');
let nextId = cfg.id_form === 'restart-at-zero' ? 0 : 1000;
let submits = 0;
let sessions = 0;
const receivers = [];

const stats = { submits: 0, first: 0, last: 0, receipts_acked: 0, receipts_sent: 0 };

function out(event) {
  if (cfg.quiet && (event.event === 'submit' || event.event === 'receipt_resp')) return;
  process.stdout.write(JSON.stringify(event) + '\n');
}

process.on('SIGUSR2', () => process.stdout.write(JSON.stringify({ event: 'stats', ...stats }) + '\n'));

function stamp() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, '0');
  return p(d.getUTCFullYear() % 100) + p(d.getUTCMonth() + 1) + p(d.getUTCDate()) + p(d.getUTCHours()) + p(d.getUTCMinutes());
}

function text(sm) {
  if (sm === undefined || sm === null) return '';
  if (typeof sm === 'string') return sm;
  if (Buffer.isBuffer(sm)) return sm.toString('latin1');
  return typeof sm.message === 'string' ? sm.message : Buffer.from(sm.message || []).toString('latin1');
}

function udh(sm) {
  if (!sm || !sm.udh) return '';
  return sm.udh.map((b) => Buffer.from(b).toString('hex')).join('');
}

function receiver() {
  for (let i = receivers.length - 1; i >= 0; i--) {
    if (!receivers[i].closed && !receivers[i].socket.destroyed) return receivers[i];
  }
  return null;
}

// Receipts wait here while no receiver is bound, as a real SMSC keeps them for the next bind; so do the ones
// sent on a session that closed before acknowledging them (the ESME may have died before storing them).
const pendingReceipts = [];

function requeueUnacked(session) {
  if (!session.unacked) return;
  for (const receipt of session.unacked) pendingReceipts.push(receipt);
  session.unacked.clear();
}

function flushReceipts() {
  while (pendingReceipts.length && receiver()) sendReceipt(...pendingReceipts.shift());
}

const MESSAGE_STATES = { ENROUTE: 1, DELIVRD: 2, EXPIRED: 3, DELETED: 4, UNDELIV: 5, ACCEPTD: 6, UNKNOWN: 7, REJECTD: 8 };

function sendReceipt(submit, respId, receiptId, stat, esmClass = 4) {
  const session = receiver();
  if (!session) {
    pendingReceipts.push([submit, respId, receiptId, stat, esmClass]);
    return;
  }
  const body = 'id:' + receiptId + ' sub:001 dlvrd:' + (stat === 'DELIVRD' ? '001' : '000') +
    ' submit date:' + stamp() + ' done date:' + stamp() + ' stat:' + stat + ' err:' +
    (stat === 'DELIVRD' ? '000' : '001') + ' Text:' + text(submit.short_message).slice(0, 20);
  const options = {
    source_addr: submit.destination_addr,
    destination_addr: submit.source_addr,
    esm_class: esmClass,
    short_message: Buffer.from(body, 'latin1'),
  };
  if (cfg.receipt_tlvs) {
    options.receipted_message_id = respId;
    options.message_state = MESSAGE_STATES[stat];
  }
  stats.receipts_sent += 1;
  const entry = [submit, respId, receiptId, stat, esmClass];
  session.unacked = session.unacked || new Set();
  session.unacked.add(entry);
  session.deliver_sm(options, (resp) => {
    session.unacked.delete(entry);
    if (resp.command_status === 0) stats.receipts_acked += 1;
    out({ event: 'receipt_resp', id: receiptId, stat, esm_class: esmClass, status: resp.command_status,
      session: session.number });
  });
}

let moSent = false;
let moReference = 40;

function sendMo(mo) {
  const session = receiver();
  const parts = mo.parts || 1;
  const size = Math.ceil(mo.text.length / parts);
  const reference = moReference++;
  for (let i = 0; i < parts; i++) {
    const chunk = mo.text.slice(i * size, (i + 1) * size);
    const options = { source_addr: mo.source, source_addr_ton: 1, source_addr_npi: 1,
      destination_addr: mo.dest, esm_class: 0 };
    options.short_message = parts > 1
      ? { udh: Buffer.from([0x05, 0x00, 0x03, reference, parts, i + 1]), message: chunk } : chunk;
    session.deliver_sm(options, (resp) => out({ event: 'mo_resp', part: i + 1, status: resp.command_status }));
  }
}

require('readline').createInterface({ input: process.stdin }).on('line', (line) => sendMo(JSON.parse(line)));

let binds = 0;

function bind(session, pdu, mode) {
  binds += 1;
  if (binds <= (cfg.refuse_binds || 0)) {
    out({ event: 'bind', ok: false, refused: true });
    session.send(pdu.response({ command_status: smpp.ESME_RBINDFAIL }));
    return;
  }
  if (pdu.system_id !== cfg.system_id || pdu.password !== cfg.password) {
    out({ event: 'bind', ok: false, system_id: pdu.system_id });
    session.send(pdu.response({ command_status: smpp.ESME_RINVPASWD }));
    return;
  }
  session.number = ++sessions;
  out({ event: 'bind', ok: true, mode, session: session.number });
  if (mode !== 'tx') receivers.push(session);
  session.send(pdu.response({ system_id: 'testsmsc' }));
  setTimeout(flushReceipts, 50);
  if (mode !== 'tx' && cfg.mo && !moSent) {
    moSent = true;
    setTimeout(() => cfg.mo.forEach(sendMo), 300);
  }
}

function onSubmit(session, pdu) {
  submits += 1;
  const n = submits;
  const now = Date.now();
  stats.submits = n;
  if (!stats.first) stats.first = now;
  stats.last = now;
  const sar = pdu.sar_msg_ref_num !== undefined
    ? { ref: pdu.sar_msg_ref_num, total: pdu.sar_total_segments, seq: pdu.sar_segment_seqnum } : null;
  out({
    event: 'submit', n, session: session.number, source: pdu.source_addr, source_ton: pdu.source_addr_ton, source_npi: pdu.source_addr_npi,
    dest: pdu.destination_addr, dest_ton: pdu.dest_addr_ton, dest_npi: pdu.dest_addr_npi, esm_class: pdu.esm_class,
    data_coding: pdu.data_coding, registered_delivery: pdu.registered_delivery, udh: udh(pdu.short_message),
    message: text(pdu.short_message), sar,
    // The package reads validity_period into a Date (relative times from now): seconds left, by its reading
    validity_left: pdu.validity_period instanceof Date ? (pdu.validity_period.getTime() - now) / 1000 : null,
  });
  if (cfg.drop_after && n === cfg.drop_after) {
    session.destroy();
    return;
  }
  if (cfg.silent_after !== undefined && n > cfg.silent_after) return;
  if (n <= (cfg.throttle_first || 0)) {
    session.send(pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
    return;
  }
  const dest = pdu.destination_addr;
  if (cfg.reject_prefix && dest.startsWith(cfg.reject_prefix)) {
    session.send(pdu.response({ command_status: smpp.ESME_RINVDSTADR }));
    return;
  }
  const id = nextId++;
  let respId = String(id);
  if (cfg.id_form === 'hex-dec') respId = id.toString(16).toUpperCase();
  if (cfg.id_form === 'padded') respId = String(id).padStart(12, '0');
  const receiptId = String(id);
  const stat = cfg.undeliverable_prefix && dest.startsWith(cfg.undeliverable_prefix) ? 'UNDELIV' : 'DELIVRD';
  const answer = () => session.send(pdu.response({ message_id: respId }));
  const respond = cfg.response_delay_ms ? () => setTimeout(answer, cfg.response_delay_ms) : answer;
  const planned = Object.entries(cfg.receipts_by_prefix || {}).find(([prefix]) => dest.startsWith(prefix));
  const receipt = () => {
    if (planned) {
      for (const r of planned[1]) {
        const esmClass = r.esm_class === undefined ? 4 : r.esm_class;
        setTimeout(() => sendReceipt(pdu, respId, receiptId, r.stat, esmClass), r.delay_ms || 0);
      }
      return;
    }
    if (cfg.intermediate) sendReceipt(pdu, respId, receiptId, 'ENROUTE');
    if (pdu.registered_delivery & 1) sendReceipt(pdu, respId, receiptId, stat);
  };
  if (cfg.receipts_first) {
    receipt();
    setTimeout(respond, 100);
  } else {
    respond();
    setTimeout(receipt, cfg.receipt_delay_ms || 20);
  }
}

const server = smpp.createServer((session) => {
  session.on('close', () => { session.closed = true; requeueUnacked(session); out({ event: 'close' }); });
  session.on('error', () => { session.closed = true; requeueUnacked(session); });
  session.on('bind_transceiver', (pdu) => bind(session, pdu, 'trx'));
  session.on('bind_transmitter', (pdu) => bind(session, pdu, 'tx'));
  session.on('bind_receiver', (pdu) => bind(session, pdu, 'rx'));
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => { out({ event: 'unbind' }); session.send(pdu.response()); session.close(); });
  session.on('submit_sm', (pdu) => onSubmit(session, pdu));
});
server.listen(cfg.port || 2775, '127.0.0.1', () => out({ event: 'listening', port: cfg.port }));
