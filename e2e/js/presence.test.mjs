// Presence channels: members, member_added/member_removed, and a user on several
// connections (first connection adds, last one removes).
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, cleanup, sdk, uniq, json, expectNone, sleep, eventually, nodeConnections } from './lib.mjs';

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
