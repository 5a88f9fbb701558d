// Run against a herald started with flags only: one app from --app-id/--app-key/
// --app-secret without --client-events, --max-connections E2E_MAX_CONNECTIONS and
// --activity-timeout E2E_ACTIVITY_TIMEOUT seconds.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, cleanup, sdk, uniq, env, expectNone, sleep, quiesce } from './lib.mjs';

afterEach(cleanup);

test('client events disabled for the app: pusher:error 4301, nothing relayed', { timeout: 10000 }, async () => {
  const ch = uniq('private-');
  const a = await connect({ name: 'a' });
  const b = await connect({ name: 'b' });
  const chA = await a.subscribed(ch);
  await b.subscribed(ch);
  chA.trigger('client-hello', { x: 1 });
  const err = await a.waitError(4301);
  assert.equal(typeof err.message, 'string');
  await sdk().trigger(ch, 'marker', {});
  await b.waitEvent(ch, 'marker');
  expectNone(b.frames, (f) => f.dir === 'in' && f.event === 'client-hello', 'client event with client events disabled');
  assert.equal(a.state, 'connected', '4301 does not close the connection');
});

test('short activity timeout: announced in the handshake, pusher-js pings, herald pongs, nobody drops', { timeout: 15000 }, async () => {
  assert.ok(env.activityTimeout > 0, 'E2E_ACTIVITY_TIMEOUT is set');
  const a = await connect({ name: 'a' });
  const [est] = a.inbound('pusher:connection_established');
  assert.equal(JSON.parse(est.data).activity_timeout, env.activityTimeout);
  const socketId = a.socketId;
  // pusher-js pings after activity_timeout of silence and waits up to 30 s for the pong.
  await a.frames.wait((f) => f.dir === 'out' && f.event === 'pusher:ping', 'a: pusher:ping sent', env.activityTimeout * 1000 + 3000);
  await a.waitFrame('pusher:pong', undefined, 3000);
  // Idle for more than twice the timeout: still the same connection.
  await sleep(env.activityTimeout * 1000 * 2 + 500);
  assert.equal(a.state, 'connected');
  assert.equal(a.socketId, socketId);
  assert.equal(a.tap.sockets.length, 1, 'no reconnect');
  assert.ok(a.inbound('pusher:pong').length >= 2, `pongs: ${a.inbound('pusher:pong').length}`);
});

test('--max-connections: the connection past the limit gets 4100, and gets in once there is room', { timeout: 15000 }, async () => {
  const max = env.maxConnections;
  assert.ok(max > 0, 'E2E_MAX_CONNECTIONS is set');
  await quiesce();
  const held = [];
  for (let i = 0; i < max; i++) held.push(await connect({ name: `held${i}` }));
  const extra = await connect({ name: 'extra', wait: false });
  const err = await extra.waitError(4100);
  assert.ok(err, '4100 reported to pusher-js');
  const [errFrame] = extra.inbound('pusher:error');
  assert.ok(errFrame, 'pusher:error before the close');
  assert.equal(errFrame.parsedData.code, 4100, errFrame.raw);
  const close = await extra.waitClose(0);
  assert.equal(close.code, 4100, 'WebSocket close code');
  // 4100 is "back off and retry": pusher-js is not told to give up.
  assert.notEqual(extra.state, 'disconnected');
  for (const h of held) assert.equal(h.state, 'connected');

  held[0].disconnect();
  await extra.waitState('connected', 8000);
  assert.ok(extra.tap.sockets.length >= 2, 'it reconnected on a new socket');
});
