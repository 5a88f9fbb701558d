// Presence channels: members, member_added/member_removed, and a user on several
// connections (first connection adds, last one removes).
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, cleanup, sdk, uniq, json, expectNone, sleep, eventually, nodeConnections, env } from './lib.mjs';

afterEach(cleanup);

const alice = { user_id: 'alice', user_info: { name: 'Alice', emoji: '🦊' } };
const bob = { user_id: 'bob', user_info: { name: 'Bob' } };

function members(channel) {
  const m = {};
  channel.members.each((x) => (m[x.id] = x.info));
  return m;
}

async function users(ch) {
  const res = await sdk().get({ path: `/channels/${ch}/users` });
  const body = await json(res);
  return body.users.map((u) => u.id).sort();
}

test('presence with two users: members, me, member_added, member_removed', { timeout: 10000 }, async () => {
  const ch = uniq('presence-room-');
  const a = await connect({ name: 'alice', user: alice });
  const chA = await a.subscribed(ch);
  assert.equal(chA.members.count, 1);
  assert.deepEqual(chA.members.me, { id: 'alice', info: alice.user_info });
  const [subA] = a.inbound('pusher_internal:subscription_succeeded', ch);
  assert.equal(typeof subA.data, 'string', 'presence data is a JSON string');
  assert.deepEqual(subA.parsedData, { presence: { ids: ['alice'], hash: { alice: alice.user_info }, count: 1 } });

  const b = await connect({ name: 'bob', user: bob });
  const chB = await b.subscribed(ch);
  assert.equal(chB.members.count, 2);
  assert.deepEqual(members(chB), { alice: alice.user_info, bob: bob.user_info });
  assert.deepEqual(chB.members.me, { id: 'bob', info: bob.user_info });
  const [subB] = b.inbound('pusher_internal:subscription_succeeded', ch);
  assert.deepEqual([...subB.parsedData.presence.ids].sort(), ['alice', 'bob']);
  assert.equal(subB.parsedData.presence.count, 2);

  const added = await a.waitEvent(ch, 'pusher:member_added');
  assert.deepEqual(added.data, { id: 'bob', info: bob.user_info });
  const [addedFrame] = a.inbound('pusher_internal:member_added', ch);
  assert.equal(typeof addedFrame.data, 'string', 'member_added data is a JSON string');
  assert.deepEqual(addedFrame.parsedData, { user_id: 'bob', user_info: bob.user_info });
  assert.equal(chA.members.count, 2);
  // member_added goes to the others, not to the member who joined.
  assert.equal(b.inbound('pusher_internal:member_added', ch).length, 0, 'bob is not told about himself');
  assert.deepEqual(await users(ch), ['alice', 'bob']);

  b.disconnect();
  const removed = await a.waitEvent(ch, 'pusher:member_removed');
  assert.deepEqual(removed.data, { id: 'bob', info: bob.user_info });
  const [removedFrame] = a.inbound('pusher_internal:member_removed', ch);
  assert.deepEqual(removedFrame.parsedData, { user_id: 'bob' });
  assert.equal(chA.members.count, 1);
  assert.deepEqual(await users(ch), ['alice']);
});

test('presence with one user on two connections: one member_added, member_removed after the last', { timeout: 10000 }, async () => {
  const ch = uniq('presence-multi-');
  const watcher = await connect({ name: 'bob (watcher)', user: bob });
  await watcher.subscribed(ch);

  const a1 = await connect({ name: 'alice#1', user: alice });
  await a1.subscribed(ch);
  await watcher.waitEvent(ch, 'pusher:member_added');

  const a2 = await connect({ name: 'alice#2', user: alice });
  const chA2 = await a2.subscribed(ch);
  const [sub] = a2.inbound('pusher_internal:subscription_succeeded', ch);
  assert.deepEqual([...sub.parsedData.presence.ids].sort(), ['alice', 'bob'], 'ids are unique users');
  assert.equal(sub.parsedData.presence.count, 2, 'count is distinct users');
  assert.equal(chA2.members.count, 2);
  assert.deepEqual(await users(ch), ['alice', 'bob'], 'REST lists alice once');

  // A marker proves the watcher saw everything sent before it.
  const marker = uniq('marker-');
  await watcher.subscribed(marker);
  await sdk().trigger(marker, 'm1', {});
  await watcher.waitEvent(marker, 'm1');
  assert.equal(watcher.inbound('pusher_internal:member_added', ch).length, 1, 'no member_added for the second connection');

  // The first connection leaves: alice is still there.
  const before = await nodeConnections();
  a1.disconnect();
  await eventually(async () => (await nodeConnections()) === before - 1, 'herald to see alice#1 leave');
  await sleep(300);
  await sdk().trigger(marker, 'm2', {});
  await watcher.waitEvent(marker, 'm2');
  expectNone(watcher.frames, (f) => f.dir === 'in' && f.event === 'pusher_internal:member_removed', 'member_removed while alice still has a connection');
  assert.deepEqual(await users(ch), ['alice', 'bob']);

  // The last one leaves: now alice is removed, once.
  a2.disconnect();
  const removed = await watcher.waitEvent(ch, 'pusher:member_removed');
  assert.equal(removed.data.id, 'alice');
  await sdk().trigger(marker, 'm3', {});
  await watcher.waitEvent(marker, 'm3');
  assert.equal(watcher.inbound('pusher_internal:member_removed', ch).length, 1, 'one member_removed');
  assert.deepEqual(await users(ch), ['bob']);
});

test('one user on two connections: unsubscribing one does not remove the member', { timeout: 10000 }, async () => {
  const ch = uniq('presence-unsub-');
  const watcher = await connect({ name: 'bob (watcher)', user: bob });
  await watcher.subscribed(ch);
  const a1 = await connect({ name: 'alice#1', user: alice });
  const a2 = await connect({ name: 'alice#2', user: alice });
  await a1.subscribed(ch);
  await a2.subscribed(ch);
  await watcher.waitEvent(ch, 'pusher:member_added');

  // pusher:unsubscribe has no reply: give herald a moment, then a marker.
  a1.pusher.unsubscribe(ch);
  await sleep(300);
  await sdk().trigger(ch, 'marker', {});
  await watcher.waitEvent(ch, 'marker');
  expectNone(watcher.frames, (f) => f.dir === 'in' && f.event === 'pusher_internal:member_removed', 'member_removed while alice#2 is still subscribed');

  a2.pusher.unsubscribe(ch);
  const removed = await watcher.waitEvent(ch, 'pusher:member_removed');
  assert.equal(removed.data.id, 'alice');
  assert.deepEqual(await users(ch), ['bob']);
});

test('presence subscription with tampered channel_data is refused', { timeout: 10000 }, async () => {
  const ch = uniq('presence-');
  // Signed for alice, but claims to be bob: the signature covers channel_data.
  const a = await connect({
    name: 'mallory',
    user: alice,
    authorize: (socketId, channel, sign) => ({ ...sign(socketId, channel), channel_data: JSON.stringify(bob) }),
  });
  a.subscribe(ch);
  const err = await a.waitEvent(ch, 'pusher:subscription_error');
  assert.equal(err.data.status, 401, JSON.stringify(err.data));
  assert.equal(a.state, 'connected');
});

test('unsubscribing from a presence channel sends member_removed to the others', { timeout: 10000 }, async () => {
  const ch = uniq('presence-leave-');
  const a = await connect({ name: 'alice', user: alice });
  const b = await connect({ name: 'bob', user: bob });
  await a.subscribed(ch);
  await b.subscribed(ch);
  await a.waitEvent(ch, 'pusher:member_added');
  b.pusher.unsubscribe(ch);
  const removed = await a.waitEvent(ch, 'pusher:member_removed');
  assert.equal(removed.data.id, 'bob');
  assert.equal(b.state, 'connected', 'bob is still connected');
  assert.deepEqual(await users(ch), ['alice']);
  // Bob no longer gets the channel's events.
  await sdk().trigger(ch, 'after', {});
  await a.waitEvent(ch, 'after');
  await sleep(100);
  expectNone(b.frames, (f) => f.dir === 'in' && f.event === 'after', 'event after unsubscribe');
});

test('presence member limit: the user past max_presence_members is refused, the connection stays', { timeout: 10000 }, async () => {
  assert.ok(env.app2 && env.app2.maxPresenceMembers > 0, 'the second app has a small max_presence_members (APP2_MAX_PRESENCE_MEMBERS)');
  const max = env.app2.maxPresenceMembers;
  const ch = uniq('presence-full-');
  for (let i = 0; i < max; i++) {
    const c = await connect({ name: `m${i}`, app: env.app2, user: { user_id: `m${i}` } });
    await c.subscribed(ch);
  }
  // Another connection of a user already in the channel is not a new member.
  const again = await connect({ name: 'm0-again', app: env.app2, user: { user_id: 'm0' } });
  await again.subscribed(ch);

  const late = await connect({ name: 'late', app: env.app2, user: { user_id: 'late' } });
  late.subscribe(ch);
  const err = await late.waitEvent(ch, 'pusher:subscription_error');
  assert.equal(typeof err.data.type, 'string', JSON.stringify(err.data));
  assert.equal(late.inbound('pusher_internal:subscription_succeeded', ch).length, 0);
  assert.equal(late.state, 'connected');
  const res = await sdk({ app: env.app2 }).get({ path: `/channels/${ch}/users` });
  assert.equal((await json(res)).users.length, max);
});

test('numeric user_id in channel_data works with pusher-js', { timeout: 10000 }, async () => {
  const ch = uniq('presence-num-');
  const a = await connect({ name: 'n42', user: { user_id: 42, user_info: { n: 42 } } });
  const b = await connect({ name: 'n43', user: { user_id: 43 } });
  const chA = await a.subscribed(ch);
  const chB = await b.subscribed(ch);
  assert.equal(chB.members.count, 2);
  assert.deepEqual(chB.members.get('42'), { id: '42', info: { n: 42 } });
  assert.equal(String(chA.members.me.id), '42');
  const added = await a.waitEvent(ch, 'pusher:member_added');
  assert.equal(String(added.data.id), '43');
  assert.deepEqual(await users(ch), ['42', '43'], 'REST ids are strings');
});

test('abrupt connection loss: herald cleans up, pusher-js reconnects and resubscribes', { timeout: 15000 }, async () => {
  const ch = uniq('presence-lost-');
  const w = await connect({ name: 'bob (watcher)', user: bob });
  const chW = await w.subscribed(ch);
  const a = await connect({ name: 'alice', user: alice });
  await a.subscribed(ch);
  await w.waitEvent(ch, 'pusher:member_added');
  let before;
  await eventually(async () => (before = await nodeConnections()) >= 2, 'herald to count the connections');
  const oldID = a.socketId;

  // Kill alice's TCP connection under pusher-js, without a WebSocket close handshake.
  a.pusher.connection.connection.transport.socket._stream.destroy();
  const lost = await a.waitClose(0);
  assert.equal(lost.code, 1006, 'the client saw an abnormal closure');

  // pusher-js reconnects after a second and subscribes again with a fresh auth.
  await a.frames.wait((f) => f.dir === 'in' && f.sock === 1 && f.event === 'pusher_internal:subscription_succeeded' && f.channel === ch, 'alice: resubscribed on the new socket', 8000);
  assert.notEqual(a.socketId, oldID);
  // herald let go of the lost connection: back to the same count, alice listed once.
  await eventually(async () => (await nodeConnections()) === before, `herald to count ${before} connections again`);
  assert.deepEqual(await users(ch), ['alice', 'bob']);
  // Whatever member_removed/member_added the watcher saw, they add up.
  await sleep(200);
  assert.equal(chW.members.count, 2);
  assert.ok(chW.members.get('alice'), 'the watcher lists alice');
  await sdk().trigger(ch, 'welcome-back', {});
  await a.waitEvent(ch, 'welcome-back');
});

test('presence limits: user_info over 1 KB and user_id over 128 characters are refused', { timeout: 10000 }, async () => {
  const cases = [
    { name: 'big-info', user: { user_id: 'big', user_info: { blob: 'x'.repeat(2000) } }, ok: false },
    { name: 'long-id', user: { user_id: 'i'.repeat(129) }, ok: false },
    { name: 'id-128', user: { user_id: 'j'.repeat(128) }, ok: true },
  ];
  for (const k of cases) {
    const ch = uniq('presence-limits-');
    const c = await connect({ name: k.name, user: k.user });
    if (k.ok) {
      await c.subscribed(ch);
      continue;
    }
    c.subscribe(ch);
    const err = await c.waitEvent(ch, 'pusher:subscription_error');
    assert.equal(typeof err.data.error, 'string', JSON.stringify(err.data));
    assert.equal(c.inbound('pusher_internal:subscription_succeeded', ch).length, 0, `${k.name} was let in`);
    assert.equal(c.state, 'connected', `${k.name}: the connection stays`);
  }
});
