// User authentication: pusher:signin, server-to-user messages (SDK sendToUser) and
// terminate_connections.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, cleanup, sdk, uniq, json, expectNone, sleep } from './lib.mjs';

afterEach(cleanup);

test('pusher:signin answers pusher:signin_success with the same user_data', { timeout: 10000 }, async () => {
  const id = uniq('u-');
  const a = await connect({ name: 'a', userData: { id, user_info: { name: 'A' } } });
  await a.signin();
  const [out] = a.outbound('pusher:signin');
  const [ok] = a.inbound('pusher:signin_success');
  assert.equal(ok.parsedData.user_data, out.data.user_data, 'user_data echoed unchanged');
  assert.deepEqual(a.pusher.user.user_data, { id, user_info: { name: 'A' } });
});

test('sign-in with a wrong signature is refused and the connection is not bound to the user', { timeout: 10000 }, async () => {
  const id = uniq('u-');
  const a = await connect({ name: 'a', userData: { id }, sdkOptions: { secret: 'wrong-secret' } });
  a.pusher.signin();
  await a.waitFrame('pusher:error');
  await sleep(200);
  assert.equal(a.inbound('pusher:signin_success').length, 0, 'no signin_success');
  const res = await sdk().sendToUser(id, 'hello', {});
  assert.equal(res.status, 200);
  await sleep(300);
  expectNone(a.frames, (f) => f.dir === 'in' && f.event === 'hello', 'server-to-user event to a connection whose sign-in failed');
});

test('a connection signed in as one user cannot sign in again as another', { timeout: 10000 }, async () => {
  const ivan = uniq('ivan-');
  const judy = uniq('judy-');
  const a = await connect({ name: 'ivan', userData: { id: ivan } });
  await a.signin();
  // Correctly signed for this socket, but the connection is already ivan.
  a.pusher.send_event('pusher:signin', sdk().authenticateUser(a.socketId, { id: judy }));
  const err = await a.waitFrame('pusher:error');
  assert.equal(typeof err.parsedData.message, 'string', err.raw);
  assert.equal(a.inbound('pusher:signin_success').length, 1, 'only the first sign-in succeeded');
  await sdk().sendToUser(judy, 'for-judy', {});
  await sdk().sendToUser(ivan, 'for-ivan', {});
  await a.userEvents.wait((e) => e.event === 'for-ivan', 'ivan: for-ivan');
  await sleep(100);
  expectNone(a.frames, (f) => f.dir === 'in' && f.event === 'for-judy', "judy's message at ivan's connection");
});

test('sendToUser reaches every connection of that signed-in user and nobody else', { timeout: 10000 }, async () => {
  const erin = uniq('erin-');
  const frank = uniq('frank-');
  const e1 = await connect({ name: 'erin#1', userData: { id: erin } });
  const e2 = await connect({ name: 'erin#2', userData: { id: erin } });
  const f = await connect({ name: 'frank', userData: { id: frank } });
  const anon = await connect({ name: 'anonymous' });
  await Promise.all([e1.signin(), e2.signin(), f.signin()]);

  // A connection that is not erin cannot listen to erin's channel.
  anon.pusher.send_event('pusher:subscribe', { channel: `#server-to-user-${erin}`, auth: '' });
  f.pusher.send_event('pusher:subscribe', { channel: `#server-to-user-${erin}`, auth: '' });
  await sleep(200);
  for (const c of [anon, f]) {
    assert.equal(c.inbound('pusher_internal:subscription_succeeded', `#server-to-user-${erin}`).length, 0, `${c.name} subscribed to erin's channel: ${c.dump()}`);
  }

  const res = await sdk().sendToUser(erin, 'notice', { msg: 'for erin' });
  assert.equal(res.status, 200);
  for (const c of [e1, e2]) {
    const ev = await c.userEvents.wait((e) => e.event === 'notice', `${c.name}: user event notice`);
    assert.deepEqual(ev.data, { msg: 'for erin' });
  }
  // Markers for the others, then check they got nothing.
  await sdk().sendToUser(frank, 'marker', {});
  await f.userEvents.wait((e) => e.event === 'marker', 'frank: marker');
  const pub = uniq('public-');
  await anon.subscribed(pub);
  await sdk().trigger(pub, 'marker', {});
  await anon.waitEvent(pub, 'marker');
  await sleep(100);
  expectNone(f.frames, (x) => x.dir === 'in' && x.event === 'notice', "erin's message at frank");
  expectNone(anon.frames, (x) => x.dir === 'in' && x.event === 'notice', "erin's message at an anonymous connection");
});

test('terminate_connections closes every connection of the user with 4009 and pusher-js stays down', { timeout: 10000 }, async () => {
  const gina = uniq('gina-');
  const hank = uniq('hank-');
  const g1 = await connect({ name: 'gina#1', userData: { id: gina }, user: { user_id: gina } });
  const g2 = await connect({ name: 'gina#2', userData: { id: gina } });
  const h = await connect({ name: 'hank', userData: { id: hank }, user: { user_id: hank } });
  await Promise.all([g1.signin(), g2.signin(), h.signin()]);
  // gina is also a presence member; hank watches.
  const room = uniq('presence-room-');
  await h.subscribed(room);
  await g1.subscribed(room);
  await h.waitEvent(room, 'pusher:member_added');

  const res = await sdk().terminateUserConnections(gina);
  assert.equal(res.status, 200);
  assert.deepEqual(await json(res), {});

  for (const g of [g1, g2]) {
    const err = await g.waitFrame('pusher:error');
    assert.equal(err.parsedData.code, 4009, err.raw);
    const close = await g.waitClose(0);
    assert.equal(close.code, 4009, `close code (${g.name})`);
    await g.waitState('disconnected');
  }
  await sleep(1500);
  for (const g of [g1, g2]) {
    assert.equal(g.tap.sockets.length, 1, `${g.name}: pusher-js must not reconnect after 4009`);
    assert.equal(g.state, 'disconnected');
  }
  // hank is untouched.
  assert.equal(h.state, 'connected');
  assert.equal(h.tap.sockets.length, 1);
  await sdk().sendToUser(hank, 'still-here', {});
  await h.userEvents.wait((e) => e.event === 'still-here', 'hank: still-here');
  // gina left the presence channel with her connections.
  const removed = await h.waitEvent(room, 'pusher:member_removed');
  assert.equal(removed.data.id, gina);

  // Termination is not a ban: gina may connect again.
  g1.pusher.connect();
  await g1.waitState('connected');
  assert.equal(g1.tap.sockets.length, 2);
});
