// Through a real HAProxy (e2e/haproxy_test.go), run from deploy/haproxy/haproxy.cfg:
// TLS terminated by HAProxy, PROXY v2 to two herald nodes joined through Redis,
// leastconn. pusher-js connects with forceTLS through wss://; the `pusher` SDK publishes
// over https through the same frontend. Both trust the test's own CA
// (NODE_EXTRA_CA_CERTS). The nodes refuse a connection from HAProxy's address without a
// PROXY header, so nothing here reaches them except through HAProxy (the admin ports,
// which take no header, excepted).
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, cleanup, sdk, uniq, env, json, nodeOf, lbSessions, lbStats, quiesce, eventually } from './lib.mjs';

afterEach(cleanup);

const frontend = { tls: process.env.E2E_LB_TLS_FRONTEND, plain: process.env.E2E_LB_PLAIN_FRONTEND };

test('wss:// through HAProxy: pusher-js subscribes and gets an event published over https through HAProxy', { timeout: 15000 }, async () => {
  assert.ok(env.lb, 'E2E_LB_* is set');
  const before = await lbSessions(frontend.tls);
  const a = await connect({ name: 'a', via: 'tls' });
  assert.equal(a.pusher.config.useTLS, true, 'pusher-js uses TLS');
  const ch = uniq('lb-tls-');
  await a.subscribed(ch);
  const res = await sdk({ via: 'tls' }).trigger(ch, 'hello', { over: 'https' });
  assert.equal(res.status, 200);
  const ev = await a.waitEvent(ch, 'hello');
  assert.deepEqual(ev.data, { over: 'https' });
  // Both went through the TLS frontend: the WebSocket and the API request.
  const after = await lbSessions(frontend.tls);
  assert.ok(after - before >= 2, `HAProxy's ${frontend.tls} counted ${after - before} sessions, want at least 2`);
});

test('leastconn puts two clients on different nodes; they hear each other through Redis, and the API answers for the cluster', { timeout: 20000 }, async () => {
  await quiesce(5000, 1);
  await quiesce(5000, 2);
  const a = await connect({ name: 'a', via: 'tls' });
  const b = await connect({ name: 'b', via: 'plain' });
  assert.notEqual(nodeOf(a), nodeOf(b), `leastconn: a on node ${nodeOf(a)}, b on node ${nodeOf(b)}`);
  const servers = (await lbStats()).filter((r) => r.svname !== 'FRONTEND' && r.svname !== 'BACKEND' && r.pxname === process.env.E2E_LB_BACKEND);
  assert.equal(servers.length, 2, 'two servers in the backend');
  for (const s of servers) assert.equal(s.status, 'UP', `${s.svname} is ${s.status} (check ${s.check_status})`);

  const ch = uniq('private-lb-');
  await a.subscribed(ch);
  await b.subscribed(ch);
  // A client event from b's node reaches a's node.
  b.pusher.channel(ch).trigger('client-hi', { from: 'b' });
  const hi = await a.waitEvent(ch, 'client-hi');
  assert.deepEqual(hi.data, { from: 'b' });
  // An API publish through the plain frontend reaches both.
  const res = await sdk({ via: 'plain' }).trigger(ch, 'news', { n: 1 });
  assert.equal(res.status, 200);
  await Promise.all([a.waitEvent(ch, 'news'), b.waitEvent(ch, 'news')]);
  // Whichever node HAProxy sends the query to counts the subscribers of both (the
  // other node's count arrives within a Redis round trip).
  let info;
  await eventually(async () => {
    info = await json(await sdk({ via: 'plain' }).get({ path: `/channels/${ch}`, params: { info: 'subscription_count' } }));
    return info.subscription_count === 2;
  }, `subscription_count 2 for ${ch}`).catch((e) => {
    throw new Error(`${e.message}: ${JSON.stringify(info)}`);
  });
  assert.equal(info.occupied, true);
});
