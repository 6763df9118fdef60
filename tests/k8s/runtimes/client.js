// A Node app as it runs in an injected pod: https.get and fetch with no proxy or trust code of its
// own (NODE_EXTRA_CA_CERTS, and in explicit mode NODE_USE_ENV_PROXY or the documented undici line).
// Prints one JSON object: {"<client> <url>": status or "error: ..."}.
const https = require('https');

function viaHttps(url) {
  return new Promise((resolve) => {
    const req = https.get(url, { timeout: 10000 }, (res) => { res.resume(); resolve(res.statusCode); });
    req.on('error', (e) => resolve(`error: ${e.code || e.message}`));
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

async function viaFetch(url) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(10000) });
    return res.status;
  } catch (e) {
    return `error: ${(e.cause && (e.cause.code || e.cause.message)) || e.message}`;
  }
}

(async () => {
  const clients = (process.env.CLIENTS || 'https,fetch').split(',');
  const out = {};
  for (const url of process.argv.slice(2)) {
    if (clients.includes('https')) out[`https ${url}`] = await viaHttps(url);
    if (clients.includes('fetch')) out[`fetch ${url}`] = await viaFetch(url);
  }
  console.log(JSON.stringify(out));
})();
