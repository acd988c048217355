// Opens the daemon's status page in Debian's Chromium (driven by playwright-core, no downloaded browser) as
// an operator would, and reports what a person sees: JSON on stdout, a screenshot to the given path.
//   node browser_check.js URL USER PASSWORD SCREENSHOT
'use strict';
const { chromium } = require('playwright-core');

async function main() {
  const [url, user, password, screenshot] = process.argv.slice(2);
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
    await page.screenshot({ path: screenshot, fullPage: true });
    process.stdout.write(JSON.stringify({ refused: refused.status(), status: response.status(), bars, outcome,
      chart, latest, transports }) + '\n');
  } finally {
    await browser.close();
  }
}

main().catch((error) => { process.stderr.write(String(error.stack || error) + '\n'); process.exit(1); });
