// dashboard.mjs - drives Debian's Chromium (headless, through playwright-core) against a
// running bitnetd and checks the embedded dashboard end to end:
//   1. "/" loads and shows the (empty) job list, with no request leaving the daemon;
//   2. a job submitted over REST appears in the list and its row reaches "succeeded"
//      while the page is open (the page learns it by itself: no reload);
//   3. the job page shows the stage timeline, all 19 metrics, the artifacts with
//      download links that work, and the fine-tuning loss chart as an SVG polyline;
//   4. a second job can be cancelled from its page with the cancel button.
// With --read-token and --submit-token the daemon runs with auth on: the page must ask
// for a token (the read one is given), and the cancel button, refused with 403 for a
// read-only token, must ask again (the submit one is given).
// Screenshots go to --out. Exit 0 on success, 1 with a message on the first failure.
//
//   node dashboard.mjs --url URL --model PATH --config JSON --out DIR
//                      [--long-config JSON] [--read-token T --submit-token T]
// --long-config is the config of the job to cancel (a budget long enough to catch it).
import { chromium } from 'playwright-core';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
for (const k of ['url', 'model', 'config', 'out']) if (!args[k]) fail(`missing --${k}`);
const base = args.url.replace(/\/$/, '');
const JOB_TIMEOUT_MS = Number(process.env.BN_BROWSER_JOB_TIMEOUT_MS || 240000);
mkdirSync(args.out, { recursive: true });

function fail(msg) { throw new Error(msg); }
function log(msg) { console.log(`[dashboard] ${msg}`); }

async function submit(body) {
  const headers = { 'Content-Type': 'application/json' };
  if (args['submit-token']) headers.Authorization = `Bearer ${args['submit-token']}`;
  const res = await fetch(`${base}/v1/jobs`, { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await res.text();
  if (res.status !== 201 && res.status !== 202) fail(`POST /v1/jobs -> ${res.status}: ${text}`);
  return JSON.parse(text);
}

// A fresh profile directory per run (playwright passes it as --user-data-dir).
const profile = mkdtempSync(join(tmpdir(), 'bn-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.BN_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage'],
});
let page;
const problems = [];
// Auth on: the page shows its token dialog; type the token in and confirm.
async function giveToken(tok, shot) {
  await page.waitForSelector('#token-input', { timeout: 10000 })
    .catch(() => fail('auth is on but the page did not ask for a token'));
  if (shot) await page.screenshot({ path: join(args.out, shot) });
  await page.fill('#token-input', tok);
  await page.click('.dialog button[type=submit]');
  log('token entered in the dialog');
}
async function run() {
  page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // A 401/403 resource error is the expected first answer while auth is on; any other
  // console error is a bug in the page.
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 40[13]\b/.test(m.text())) problems.push(`console error: ${m.text()}`);
  });
  // The page must be self-contained: any request to another origin is a failure.
  page.on('request', (r) => {
    if (!r.url().startsWith(base) && !r.url().startsWith('blob:') && !r.url().startsWith('data:'))
      problems.push(`external request: ${r.url()}`);
  });

  // 1. the list
  const res = await page.goto(`${base}/`, { waitUntil: 'load' });
  if (!res || res.status() !== 200) fail(`GET / -> ${res && res.status()}`);
  const ctype = res.headers()['content-type'] || '';
  if (!ctype.startsWith('text/html')) fail(`GET / Content-Type is ${ctype}`);
  if (args['read-token']) await giveToken(args['read-token'], '00-token-dialog.png');
  await page.waitForSelector('#jobs-body tr', { timeout: 10000 });
  await page.screenshot({ path: join(args.out, '01-empty-list.png'), fullPage: true });
  log('dashboard loaded');

  // 2. submit while the page is open; the row must appear and reach succeeded
  const job = await submit({ model: args.model, output: `browser-${Date.now()}`, config: JSON.parse(args.config) });
  const id = String(job.id);
  log(`submitted job ${id}`);
  const row = `#jobs-body tr[data-id="${id}"]`;
  await page.waitForSelector(row, { timeout: 10000 });
  log('job appeared in the list');
  // Catch a moment with the job running, if it runs long enough to be seen.
  try {
    await page.waitForSelector(`${row}[data-status="running"]`, { timeout: 15000 });
    await page.screenshot({ path: join(args.out, '02-list-running.png'), fullPage: true });
  } catch { log('job was not seen running (it may have finished between polls)'); }
  await page.waitForSelector(`${row}[data-status="succeeded"], ${row}[data-status="failed"], ${row}[data-status="cancelled"]`,
    { timeout: JOB_TIMEOUT_MS });
  const status = await page.getAttribute(row, 'data-status');
  await page.screenshot({ path: join(args.out, '03-list-finished.png'), fullPage: true });
  if (status !== 'succeeded') fail(`job ${id} ended ${status} (see screenshots in ${args.out})`);
  const pct = await page.textContent(`${row} .pct`);
  if (pct.trim() !== '100%') fail(`succeeded job shows progress ${pct}`);
  log('job reached succeeded in the list');

  // 3. the job page
  await page.click(`${row} a`);
  await page.waitForSelector('#job-status.succeeded', { timeout: 10000 });
  await page.waitForSelector('#loss-chart polyline', { timeout: 10000 })
    .catch(() => fail('the fine-tuning loss chart did not render (no fine_tune/loss rows with step >= 0?)'));
  const nPoints = await page.$eval('#loss-chart polyline', (p) => p.getAttribute('points').trim().split(/\s+/).length);
  if (nPoints < 2) fail(`loss chart has ${nPoints} point(s)`);
  const stages = await page.$$eval('#timeline .stage', (ss) => ss.map((s) => [s.dataset.stage, s.className]));
  if (stages.length !== 6) fail(`timeline shows ${stages.length} stages`);
  for (const [name, cls] of stages) if (!/\bdone\b/.test(cls)) fail(`stage ${name} is "${cls}" on a succeeded job`);
  const metrics = await page.$$eval('#metrics tr[data-key] td.num', (tds) => tds.map((t) => t.className.includes('missing')));
  if (metrics.length !== 19) fail(`metrics table has ${metrics.length} rows, want 19`);
  const missing = metrics.filter(Boolean).length;
  // --expect-metrics lets a developer point this at tests/service's bitnetd-fake, whose
  // stand-in engine reports only a few metrics; the real test expects all 19.
  const want = Number(args['expect-metrics'] || 19);
  if (19 - missing < want) fail(`${missing} of the 19 metrics have no value on a succeeded job`);
  const links = await page.$$eval('#artifacts-body a', (as) => as.map((a) => a.getAttribute('href')));
  if (!links.some((h) => h.endsWith('/compression_metadata.json'))) fail(`no compression_metadata.json among artifacts: ${links}`);
  const meta = await page.evaluate(async (h) => {
    const t = sessionStorage.getItem('bitnetd.token');
    return (await fetch(h, { headers: t ? { Authorization: `Bearer ${t}` } : {} })).status;
  }, links.find((h) => h.endsWith('/compression_metadata.json')));
  if (meta !== 200) fail(`artifact link answered ${meta}`);
  await page.screenshot({ path: join(args.out, '04-job-page.png'), fullPage: true });
  log(`job page: 6 stages done, 19 metrics, ${links.length} artifacts, loss chart with ${nPoints} points`);

  // 4. cancel from the page: a job that waits behind nothing is cancelled at once or
  // mid-run; either way the page must show "cancelled" without a reload.
  const job2 = await submit({ model: args.model, output: `browser-cancel-${Date.now()}`,
    config: JSON.parse(args['long-config'] || args.config) });
  await page.goto(`${base}/#/jobs/${encodeURIComponent(job2.id)}`);
  await page.waitForSelector('#cancel', { state: 'visible', timeout: 10000 });
  page.once('dialog', (d) => d.accept());
  await page.click('#cancel');
  if (args['submit-token']) await giveToken(args['submit-token'], '05-token-dialog-cancel.png');
  await page.waitForSelector('#job-status.cancelled, #job-status.succeeded', { timeout: 60000 });
  const st2 = await page.textContent('#job-status');
  await page.screenshot({ path: join(args.out, '06-job-cancelled.png'), fullPage: true });
  if (st2 !== 'cancelled') fail(`cancel button: job ${job2.id} ended ${st2}`);
  log('cancel button works');

  if (problems.length) fail(problems.join('\n'));
  writeFileSync(join(args.out, 'result.txt'), `ok job=${id} loss_points=${nPoints}\n`);
  log('all dashboard checks passed');
}

try {
  await run();
} catch (e) {
  if (page) await page.screenshot({ path: join(args.out, 'failure.png'), fullPage: true }).catch(() => {});
  console.error(`FAIL: ${e.message}${problems.length ? '\n' + problems.join('\n') : ''}`);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
