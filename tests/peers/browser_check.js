// Opens the daemon's status page in Debian's Chromium (driven by playwright-core, no downloaded browser) as
// an operator would, and reports what a person sees: JSON on stdout, a screenshot to the given path.
//   node browser_check.js URL USER PASSWORD SCREENSHOT [SEARCHES]
// SEARCHES: a JSON list of [name, text typed in the search box, state chosen]; each result is reported.
'use strict';
const { chromium } = require('playwright-core');

async function main() {
  const [url, user, password, screenshot, searchArgument] = process.argv.slice(2);
  const searchesToRun = JSON.parse(searchArgument || '[]');
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const anonymous = await browser.newContext();
    const refused = await anonymous.request.get(url);  // a browser without credentials gets the login challenge
    const context = await browser.newContext({ httpCredentials: { username: user, password } });
    const page = await context.newPage();
    const response = await page.goto(url);
    await page.waitForSelector('#rate-chart');
    const bars = await page.$$eval('#rate-chart rect', (rects) => rects.filter((r) => r.getBBox().height > 0).length);
    const outcome = await page.$$eval('#outcome-chart rect', (rects) => rects.length);
    const chart = await page.$eval('#rate-chart', (svg) => { const b = svg.getBoundingClientRect(); return [b.width, b.height]; });
    const latest = await page.$eval('#latest', (table) => table.innerText);
    const transports = await page.$eval('#transports', (table) => table.innerText);
    const reasons = await page.$eval('#reasons', (table) => table.innerText);
    const notifications = await page.$eval('#notifications', (table) => table.innerText);
    const ticks = await page.$$eval('#rate-chart text.tick', (texts) => texts.map((t) => t.textContent));
    const heading = await page.$eval('h2:has(+ #rate-chart)', (h) => h.innerText);
    await page.screenshot({ path: screenshot, fullPage: true });
    // The operator searches: an SmsId typed into the form, then a state chosen alone.
    const searches = {};
    for (const [name, q, state] of searchesToRun) {
      await page.fill('#search input[name=q]', q);
      await page.selectOption('#search select[name=state]', state);
      await Promise.all([page.waitForNavigation(), page.click('#search button')]);
      searches[name] = await page.$eval('#latest', (table) => table.innerText);
    }
    process.stdout.write(JSON.stringify({ refused: refused.status(), status: response.status(), bars, outcome,
      chart, latest, transports, reasons, notifications, ticks, heading, searches }) + '\n');
  } finally {
    await browser.close();
  }
}

main().catch((error) => { process.stderr.write(String(error.stack || error) + '\n'); process.exit(1); });
