// The admin server: /stats and /metrics count the connections real clients hold.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, cleanup, uniq, admin, stats, eventually, quiesce, env } from './lib.mjs';

afterEach(cleanup);

// metric returns the value of one Prometheus sample, or undefined.
function metric(text, name, labels) {
  const want = labels ? `${name}{${labels}}` : name;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    if (line.slice(0, i) === want) return Number(line.slice(i + 1));
  }
  return undefined;
}

test('/healthz and /readyz answer 200 while serving', { timeout: 10000 }, async () => {
  assert.equal((await admin('/healthz')).status, 200);
  assert.equal((await admin('/readyz')).status, 200);
});

test('/stats and /metrics count connections and subscriptions', { timeout: 10000 }, async () => {
  await quiesce();
  const id = env.app.id;
  const ch = uniq('public-stats-');
  const clients = [];
  for (let i = 0; i < 3; i++) {
    const c = await connect({ name: `c${i}` });
    await c.subscribed(ch);
    clients.push(c);
  }
  const st = await eventually(async () => {
    const s = await stats();
    return s.node.connections === 3 && s.apps[id] && s.apps[id].connections === 3 ? s : null;
  }, '/stats to count 3 connections');
  assert.ok(st.apps[id].subscriptions >= 3, `subscriptions ${st.apps[id].subscriptions}`);
  assert.ok(st.apps[id].channels >= 1, `channels ${st.apps[id].channels}`);
  assert.ok(st.apps[id].connections_opened >= 3);

  const m = await admin('/metrics');
  assert.equal(m.status, 200);
  assert.match(m.type || '', /^text\/plain/);
  assert.equal(metric(m.text, 'herald_connections', `app="${id}"`), 3, 'herald_connections gauge');
  assert.ok(metric(m.text, 'herald_connections_opened_total', `app="${id}"`) >= 3, 'herald_connections_opened_total');
  assert.ok(metric(m.text, 'herald_websocket_upgrades_total') >= 3, 'herald_websocket_upgrades_total');

  clients[0].disconnect();
  await eventually(async () => (await stats()).node.connections === 2, '/stats to count 2 connections after a disconnect');
  await eventually(async () => metric((await admin('/metrics')).text, 'herald_connections', `app="${id}"`) === 2, 'herald_connections to drop to 2');
});
