// Connecting: the handshake pusher-js relies on, pings, and refusal of unknown keys.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, cleanup, sleep, sdk, uniq, env } from './lib.mjs';

afterEach(cleanup);

test('connection_established carries a socket_id digits.digits and activity_timeout', { timeout: 10000 }, async () => {
  const a = await connect({ name: 'a' });
  const b = await connect({ name: 'b' });
  const [est] = a.inbound('pusher:connection_established');
  assert.ok(est, 'no pusher:connection_established frame');
  // PUSHER.md 1.2/1.3: data is a JSON string (double encoded).
  assert.equal(typeof est.data, 'string', `data must be a JSON string: ${est.raw}`);
  const data = JSON.parse(est.data);
  assert.match(data.socket_id, /^\d+\.\d+$/);
  assert.equal(data.activity_timeout, 120, 'activity_timeout is the --activity-timeout default, in seconds');
  assert.equal(a.socketId, data.socket_id, 'pusher-js adopted the socket_id');
  assert.notEqual(a.socketId, b.socketId, 'socket ids are unique per connection');
  assert.equal(a.state, 'connected');
});

test('pusher:ping is answered with pusher:pong', { timeout: 10000 }, async () => {
  const a = await connect({ name: 'a' });
  a.pusher.send_event('pusher:ping', {});
  const pong = await a.waitFrame('pusher:pong');
  assert.equal(pong.channel, undefined);
  assert.equal(a.state, 'connected');
});

test('unknown app key: pusher:error 4001, close 4001, and pusher-js does not reconnect', { timeout: 10000 }, async () => {
  const c = await connect({ name: 'bad-key', key: 'no-such-key', wait: false });
  const err = await c.waitFrame('pusher:error');
  assert.equal(err.parsedData.code, 4001, `pusher:error code: ${err.raw}`);
  assert.equal(typeof err.parsedData.message, 'string');
  // pusher-js closes the socket itself once it has read the pusher:error; herald's close
  // frame, sent right behind the error, still arrives and sets the code.
  const close = await c.waitClose(0);
  assert.equal(close.code, 4001, 'WebSocket close code');
  await c.waitState('disconnected');
  await c.waitError(4001);
  await sleep(1500);
  assert.equal(c.tap.sockets.length, 1, `pusher-js must not reconnect after 4001; it opened ${c.tap.sockets.length} sockets`);
  assert.equal(c.state, 'disconnected');
});

test('garbage from one client does not disturb another', { timeout: 10000 }, async () => {
  const ch = uniq('public-');
  const a = await connect({ name: 'a' });
  const b = await connect({ name: 'b' });
  await b.subscribed(ch);
  a.pusher.connection.send('this is not JSON {');
  a.pusher.connection.send(JSON.stringify({ event: 'pusher:subscribe', data: 'not an object' }));
  a.pusher.connection.send(JSON.stringify({ no: 'event' }));
  await sleep(200);
  await sdk().trigger(ch, 'still-fine', {});
  await b.waitEvent(ch, 'still-fine');
  assert.equal(b.state, 'connected');
  // a got told off one way or another (a pusher:error, or a close with a code).
  const told = a.inbound('pusher:error').length > 0 || a.tap.sockets[0].close !== null;
  assert.ok(told, `no pusher:error and no close for invalid input\n${a.dump()}`);
});

test("app over its connection quota: 4004 and pusher-js does not reconnect", { timeout: 10000 }, async () => {
  assert.ok(env.app3 && env.app3.maxConnections > 0, 'the third app has max_connections (APP3_*)');
  for (let i = 0; i < env.app3.maxConnections; i++) await connect({ name: `q${i}`, app: env.app3 });
  const over = await connect({ name: 'over', app: env.app3, wait: false });
  const err = await over.waitFrame('pusher:error');
  assert.equal(err.parsedData.code, 4004, err.raw);
  const close = await over.waitClose(0);
  assert.equal(close.code, 4004, 'WebSocket close code');
  await over.waitState('disconnected');
  await sleep(1500);
  assert.equal(over.tap.sockets.length, 1, 'pusher-js must not reconnect after 4004');
  // The main app is not affected by the third app's quota.
  const other = await connect({ name: 'main-app' });
  assert.equal(other.state, 'connected');
});
