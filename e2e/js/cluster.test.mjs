// A cluster of three herald nodes joined through one Redis (e2e/cluster_test.go): pusher-js
// clients spread over the nodes, the `pusher` SDK publishing and querying through any
// of them. Whatever node a client or a publisher is on, the cluster behaves as one server.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, cleanup, sdk, uniq, json, expectNone, sleep, eventually, stats, admin, metric, nodeConnections, env } from './lib.mjs';

afterEach(cleanup);

const NODES = [1, 2, 3];
const range = (n) => [...Array(n).keys()];

test('three nodes, each with its own node id, see each other', { timeout: 10000 }, async () => {
  assert.equal(env.nodes.length, 3, 'HERALD_NODES lists three nodes');
  const ids = [];
  for (const n of NODES) {
    const st = await eventually(async () => {
      const s = await stats(n);
      return s.node.nodes && s.node.nodes.length === 3 ? s : null;
    }, `node ${n} to list 3 live nodes in /stats node.nodes`);
    assert.equal(st.node.broker.engine, process.env.E2E_BROKER_ENGINE || 'redis', `node ${n} broker engine`);
    assert.equal(st.node.broker.up, true, `node ${n} broker up`);
    ids.push(st.node.node_id);
  }
  assert.equal(new Set(ids).size, 3, `node ids ${ids} are distinct`);
  for (const n of NODES) {
    const listed = (await stats(n)).node.nodes.map((x) => x.id).sort();
    assert.deepEqual(listed, [...ids].sort(), `node ${n} lists every node`);
    const m = await admin('/metrics', n);
    assert.equal(metric(m.text, 'herald_broker_up'), 1, `node ${n}: herald_broker_up`);
    assert.equal(metric(m.text, 'herald_cluster_nodes'), 3, `node ${n}: herald_cluster_nodes`);
  }
});

test('events: subscribers on every node get each event exactly once, in order per publisher; socket_id exclusion across nodes', { timeout: 20000 }, async () => {
  const ch = uniq('public-spread-');
  const subs = [];
  for (const n of NODES) {
    for (const k of [1, 2]) {
      const c = await connect({ name: `sub${k}@${n}`, node: n });
      await c.subscribed(ch);
      subs.push(c);
    }
  }
  // A socket id names its node: three nodes, three node parts.
  assert.equal(new Set(subs.map((c) => c.socketId.split('.')[0])).size, 3, `socket ids ${subs.map((c) => c.socketId)}`);

  const N = 25;
  const via = { 1: sdk({ node: 1 }), 3: sdk({ node: 3 }) };
  // Two publishers at once, one through node 1 and one through node 3.
  await Promise.all(
    [1, 3].map(async (n) => {
      for (let i = 0; i < N; i++) {
        const res = await via[n].trigger(ch, `from-${n}`, { i });
        assert.equal(res.status, 200);
      }
      await via[n].trigger(ch, `end-${n}`, {});
    }),
  );
  for (const c of subs) {
    await c.waitEvent(ch, 'end-1');
    await c.waitEvent(ch, 'end-3');
    for (const n of [1, 3]) {
      assert.deepEqual(c.received(ch, `from-${n}`).map((e) => e.data.i), range(N), `${c.name}: the events published through node ${n}, once each, in order`);
    }
  }

  // Exclude a client of node 2 through node 1's API.
  const x = subs.find((c) => c.node === 2);
  const res = await via[1].trigger(ch, 'not-for-x', { n: 1 }, { socket_id: x.socketId });
  assert.equal(res.status, 200);
  await via[1].trigger(ch, 'after-exclusion', {});
  for (const c of subs) {
    await c.waitEvent(ch, 'after-exclusion');
    if (c !== x) assert.equal(c.received(ch, 'not-for-x').length, 1, `${c.name} gets the event once`);
  }
  expectNone(x.frames, (f) => f.dir === 'in' && f.event === 'not-for-x', `event excluded by socket_id ${x.socketId} at ${x.name}`);
});

// users lists the ids of /channels/{ch}/users through node n, sorted.
async function users(ch, n) {
  const body = await json(await sdk({ node: n }).get({ path: `/channels/${ch}/users` }));
  return body.users.map((u) => u.id).sort();
}

function members(channel) {
  const m = {};
  channel.members.each((x) => (m[x.id] = x.info));
  return m;
}

const person = (id) => ({ user_id: id, user_info: { name: id.toUpperCase() } });

test('presence: one member list across the nodes, member_added and member_removed cross nodes', { timeout: 25000 }, async () => {
  const ch = uniq('presence-spread-');
  const a = await connect({ name: 'alice@1', node: 1, user: person('alice') });
  const chA = await a.subscribed(ch);
  const b = await connect({ name: 'bob@2', node: 2, user: person('bob') });
  const chB = await b.subscribed(ch);
  const added = await a.waitEvent(ch, 'pusher:member_added');
  assert.deepEqual(added.data, { id: 'bob', info: { name: 'BOB' } });

  const c = await connect({ name: 'carol@3', node: 3, user: person('carol') });
  const chC = await c.subscribed(ch);
  const [sub] = c.inbound('pusher_internal:subscription_succeeded', ch);
  assert.deepEqual([...sub.parsedData.presence.ids].sort(), ['alice', 'bob', 'carol'], 'members from every node');
  assert.deepEqual(sub.parsedData.presence.hash, { alice: { name: 'ALICE' }, bob: { name: 'BOB' }, carol: { name: 'CAROL' } });
  assert.equal(sub.parsedData.presence.count, 3);
  assert.deepEqual(members(chC), { alice: { name: 'ALICE' }, bob: { name: 'BOB' }, carol: { name: 'CAROL' } });
  for (const w of [a, b]) {
    const ev = await w.waitEvent(ch, 'pusher:member_added', 5000, (e) => e.data.id === 'carol');
    assert.deepEqual(ev.data.info, { name: 'CAROL' });
  }

  // dave on node 1 and on node 3: one member_added, one member_removed after the last.
  const d1 = await connect({ name: 'dave@1', node: 1, user: person('dave') });
  await d1.subscribed(ch);
  const d3 = await connect({ name: 'dave@3', node: 3, user: person('dave') });
  const chD3 = await d3.subscribed(ch);
  assert.equal(chD3.members.count, 4);
  const [subD3] = d3.inbound('pusher_internal:subscription_succeeded', ch);
  assert.deepEqual([...subD3.parsedData.presence.ids].sort(), ['alice', 'bob', 'carol', 'dave'], 'dave listed once');
  const watchers = [a, b, c];
  const marker = async (name) => {
    await sdk({ node: 2 }).trigger(ch, name, {});
    for (const w of watchers) await w.waitEvent(ch, name);
  };
  await marker('m1');
  for (const w of watchers) {
    assert.equal(w.received(ch, 'pusher:member_added').filter((e) => e.data.id === 'dave').length, 1, `${w.name}: one member_added for dave`);
  }
  for (const chX of [chA, chB, chC]) assert.equal(chX.members.count, 4);

  for (const n of NODES) {
    assert.deepEqual(await users(ch, n), ['alice', 'bob', 'carol', 'dave'], `/users through node ${n}`);
    assert.deepEqual(await json(await sdk({ node: n }).get({ path: `/channels/${ch}`, params: { info: 'user_count' } })), { occupied: true, user_count: 4 }, `info=user_count through node ${n}`);
  }

  // dave's first connection leaves: he is still there, through node 3.
  const before = await nodeConnections(1);
  d1.disconnect();
  await eventually(async () => (await nodeConnections(1)) === before - 1, 'node 1 to see dave@1 leave');
  await sleep(300);
  await marker('m2');
  for (const w of watchers) {
    expectNone(w.frames, (f) => f.dir === 'in' && f.event === 'pusher_internal:member_removed', `member_removed at ${w.name} while dave is still on node 3`);
  }
  for (const n of NODES) assert.deepEqual(await users(ch, n), ['alice', 'bob', 'carol', 'dave'], `/users through node ${n}`);

  // The last one leaves: every other node's clients hear it, once.
  d3.disconnect();
  for (const w of watchers) {
    const removed = await w.waitEvent(ch, 'pusher:member_removed');
    assert.equal(removed.data.id, 'dave');
  }
  await marker('m3');
  for (const w of watchers) assert.equal(w.inbound('pusher_internal:member_removed', ch).length, 1, `${w.name}: one member_removed`);
  for (const n of NODES) assert.deepEqual(await users(ch, n), ['alice', 'bob', 'carol'], `/users through node ${n}`);

  // bob (node 2) unsubscribes: nodes 1 and 3 hear it.
  b.pusher.unsubscribe(ch);
  for (const w of [a, c]) {
    const removed = await w.waitEvent(ch, 'pusher:member_removed', 5000, (e) => e.data.id === 'bob');
    assert.deepEqual(removed.data, { id: 'bob', info: { name: 'BOB' } });
  }
  for (const n of NODES) {
    assert.deepEqual(await users(ch, n), ['alice', 'carol'], `/users through node ${n}`);
    assert.deepEqual(await json(await sdk({ node: n }).get({ path: `/channels/${ch}`, params: { info: 'user_count' } })), { occupied: true, user_count: 2 });
  }
});

test('client events cross nodes: relayed to the others, not echoed, user_id on presence', { timeout: 15000 }, async () => {
  const ch = uniq('private-chat-');
  const a = await connect({ name: 'a@1', node: 1 });
  const b = await connect({ name: 'b@2', node: 2 });
  const c = await connect({ name: 'c@3', node: 3 });
  const chA = await a.subscribed(ch);
  await b.subscribed(ch);
  const chC = await c.subscribed(ch);

  assert.equal(chA.trigger('client-typing', { who: 'a' }), true);
  for (const x of [b, c]) {
    const ev = await x.waitEvent(ch, 'client-typing');
    assert.deepEqual(ev.data, { who: 'a' });
    const [frame] = x.inbound('client-typing', ch);
    assert.equal(frame.user_id, undefined, 'no user_id on private channels');
  }
  chC.trigger('client-ack', { who: 'c' });
  for (const x of [a, b]) await x.waitEvent(ch, 'client-ack');
  // A marker through the API of a third node, then: nobody got its own event back.
  await sdk({ node: 2 }).trigger(ch, 'marker', {});
  for (const x of [a, b, c]) await x.waitEvent(ch, 'marker');
  await sleep(100);
  expectNone(a.frames, (f) => f.dir === 'in' && f.event === 'client-typing', 'client event echoed to its sender (a@1)');
  expectNone(c.frames, (f) => f.dir === 'in' && f.event === 'client-ack', 'client event echoed to its sender (c@3)');
  for (const x of [a, b, c]) {
    for (const e of ['client-typing', 'client-ack']) assert.ok(x.received(ch, e).length <= 1, `${x.name}: ${e} at most once`);
  }

  // Presence: the receiving node's clients see the sender's user_id.
  const pch = uniq('presence-game-');
  const alice = await connect({ name: 'alice@1', node: 1, user: { user_id: 'alice', user_info: {} } });
  const bob = await connect({ name: 'bob@3', node: 3, user: { user_id: 'bob', user_info: {} } });
  const chAlice = await alice.subscribed(pch);
  const chBob = await bob.subscribed(pch);
  const got = new Promise((resolve) => chBob.bind('client-move', (data, metadata) => resolve({ data, metadata })));
  chAlice.trigger('client-move', { x: 3 });
  const timeout = bob.waitEvent(pch, 'client-move', 5000, () => false);
  let data, metadata;
  try {
    ({ data, metadata } = await Promise.race([got, timeout]));
  } finally {
    timeout.cancel();
  }
  assert.deepEqual(data, { x: 3 });
  assert.deepEqual(metadata, { user_id: 'alice' });
  assert.equal(bob.inbound('client-move', pch)[0].user_id, 'alice');
  // A user_id the sender makes up is replaced, on the other node too.
  alice.pusher.connection.send(JSON.stringify({ event: 'client-spoof', channel: pch, data: { x: 2 }, user_id: 'bob' }));
  const spoof = await bob.waitFrame('client-spoof', pch);
  assert.equal(spoof.user_id, 'alice', `sender-supplied user_id must be replaced: ${spoof.raw}`);
  chBob.trigger('client-back', {});
  await alice.waitEvent(pch, 'client-back');
  expectNone(alice.frames, (f) => f.dir === 'in' && (f.event === 'client-move' || f.event === 'client-spoof'), 'client event echoed to alice');
});

test('sendToUser and terminate_connections reach the user on other nodes, and nobody else', { timeout: 15000 }, async () => {
  const erin = uniq('erin-');
  const frank = uniq('frank-');
  const hank = uniq('hank-');
  const e2 = await connect({ name: 'erin@2', node: 2, userData: { id: erin } });
  const e3 = await connect({ name: 'erin@3', node: 3, userData: { id: erin }, user: { user_id: erin } });
  const f1 = await connect({ name: 'frank@1', node: 1, userData: { id: frank } });
  const h2 = await connect({ name: 'hank@2', node: 2, userData: { id: hank }, user: { user_id: hank } });
  const anon3 = await connect({ name: 'anonymous@3', node: 3 });
  await Promise.all([e2.signin(), e3.signin(), f1.signin(), h2.signin()]);

  const res = await sdk({ node: 1 }).sendToUser(erin, 'notice', { msg: 'for erin' });
  assert.equal(res.status, 200);
  for (const e of [e2, e3]) {
    const ev = await e.userEvents.wait((x) => x.event === 'notice', `${e.name}: user event notice`);
    assert.deepEqual(ev.data, { msg: 'for erin' });
  }
  await sdk({ node: 1 }).sendToUser(frank, 'marker', {});
  await f1.userEvents.wait((x) => x.event === 'marker', 'frank: marker');
  await sdk({ node: 1 }).sendToUser(hank, 'marker', {});
  await h2.userEvents.wait((x) => x.event === 'marker', 'hank: marker');
  await sleep(100);
  for (const x of [f1, h2, anon3]) expectNone(x.frames, (f) => f.dir === 'in' && f.event === 'notice', `erin's message at ${x.name}`);
  for (const e of [e2, e3]) assert.equal(e.frames.filter((f) => f.dir === 'in' && f.event === 'notice').length, 1, `${e.name}: notice once`);

  // erin is also a presence member on node 3; hank watches from node 2.
  const room = uniq('presence-room-');
  await h2.subscribed(room);
  await e3.subscribed(room);
  await h2.waitEvent(room, 'pusher:member_added');

  const term = await sdk({ node: 1 }).terminateUserConnections(erin);
  assert.equal(term.status, 200);
  assert.deepEqual(await json(term), {});
  for (const e of [e2, e3]) {
    const err = await e.waitFrame('pusher:error');
    assert.equal(err.parsedData.code, 4009, err.raw);
    const close = await e.waitClose(0);
    assert.equal(close.code, 4009, `close code (${e.name})`);
    await e.waitState('disconnected');
  }
  const removed = await h2.waitEvent(room, 'pusher:member_removed');
  assert.equal(removed.data.id, erin);
  // Nobody else was touched.
  await sdk({ node: 3 }).sendToUser(frank, 'still-here', {});
  await f1.userEvents.wait((x) => x.event === 'still-here', 'frank: still-here');
  await sdk({ node: 3 }).sendToUser(hank, 'still-here', {});
  await h2.userEvents.wait((x) => x.event === 'still-here', 'hank: still-here');
  await anon3.ping();
  for (const x of [f1, h2, anon3]) {
    assert.equal(x.state, 'connected', `${x.name} is still connected`);
    assert.equal(x.tap.sockets.length, 1, `${x.name}: no reconnect`);
    expectNone(x.frames, (f) => f.dir === 'close' || (f.dir === 'in' && f.event === 'pusher:error'), `close or pusher:error at ${x.name}`);
  }
  for (const e of [e2, e3]) assert.equal(e.tap.sockets.length, 1, `${e.name}: pusher-js must not reconnect after 4009`);
});

test('cache channels: the last event published through node 1 is replayed on node 3 and answered by node 2', { timeout: 15000 }, async () => {
  const ch = uniq('cache-spread-');
  // Nobody anywhere subscribes yet.
  const res = await sdk({ node: 1 }).trigger(ch, 'price', { v: 1 });
  assert.equal(res.status, 200);
  const c3 = await connect({ name: 'c@3', node: 3 });
  await c3.subscribed(ch);
  const cached = await c3.waitEvent(ch, 'price');
  assert.deepEqual(cached.data, { v: 1 });
  assert.equal(c3.inbound('pusher:cache_miss', ch).length, 0, 'no cache_miss');

  // A live event through node 1 reaches node 3 and replaces the cached one.
  await sdk({ node: 1 }).trigger(ch, 'price', { v: 2 });
  await c3.waitEvent(ch, 'price', 5000, (e) => e.data.v === 2);
  const info = await json(await sdk({ node: 2 }).get({ path: `/channels/${ch}`, params: { info: 'cache' } }));
  assert.ok(info.cache, `no cache attribute through node 2: ${JSON.stringify(info)}`);
  assert.equal(info.cache.data, JSON.stringify({ v: 2 }), JSON.stringify(info));
  assert.ok(info.cache.ttl > 0 && info.cache.ttl <= 30 * 60, `ttl ${info.cache.ttl} s, want (0, 1800]`);
  const c2 = await connect({ name: 'c@2', node: 2 });
  await c2.subscribed(ch);
  const replay = await c2.waitEvent(ch, 'price');
  assert.deepEqual(replay.data, { v: 2 });
  const [live] = c3.inbound('price', ch).slice(-1);
  const [first] = c2.inbound('price', ch);
  assert.equal(first.raw, live.raw, 'the cached frame is the frame that was published');

  // private-cache- and presence-cache- channels replay across nodes too.
  for (const prefix of ['private-cache-', 'presence-cache-']) {
    const pch = uniq(prefix);
    assert.equal((await sdk({ node: 1 }).trigger(pch, 'last', { p: prefix })).status, 200);
    const r = await connect({ name: `${prefix}@3`, node: 3, user: { user_id: 'r' } });
    await r.subscribed(pch);
    const ev = await r.waitEvent(pch, 'last');
    assert.deepEqual(ev.data, { p: prefix });
    assert.equal(r.inbound('pusher:cache_miss', pch).length, 0, `${prefix}: no cache_miss`);
  }

  // A cache channel never published to is a miss on every node.
  const empty = uniq('cache-empty-');
  const m1 = await connect({ name: 'm@1', node: 1 });
  await m1.subscribed(empty);
  await m1.waitEvent(empty, 'pusher:cache_miss');
});

// channel GETs /channels/{name} with info through node n.
async function channel(name, n, info) {
  return json(await sdk({ node: n }).get({ path: `/channels/${name}`, params: info ? { info } : {} }));
}

test('queries through any node answer for the whole cluster', { timeout: 25000 }, async () => {
  const tag = uniq('');
  const pub = `public-${tag}`;
  const pres1 = `presence-${tag}-one`;
  const pres2 = `presence-${tag}-two`;
  // pub: 1 subscriber on node 1, 2 on node 2, 1 on node 3.
  for (const [n, k] of [[1, 1], [2, 1], [2, 2], [3, 1]]) {
    const c = await connect({ name: `pub${k}@${n}`, node: n });
    await c.subscribed(pub);
  }
  // pres1: two users on two nodes; pres2: one user on nodes 1 and 3.
  for (const [n, u, ch] of [[1, 'a', pres1], [2, 'b', pres1], [1, 'c', pres2], [3, 'c', pres2]]) {
    const c = await connect({ name: `${u}@${n}`, node: n, user: person(u) });
    await c.subscribed(ch);
  }
  // Counts reach Redis asynchronously: poll each node until it answers for all.
  for (const n of NODES) {
    await eventually(async () => {
      const v = await channel(pub, n, 'subscription_count');
      return v.occupied === true && v.subscription_count === 4 ? v : null;
    }, `node ${n}: ${pub} subscription_count 4`, 5000);
    await eventually(async () => {
      const v = await json(await sdk({ node: n }).get({ path: '/channels', params: { filter_by_prefix: `presence-${tag}`, info: 'user_count' } }));
      try {
        assert.deepEqual(v, { channels: { [pres1]: { user_count: 2 }, [pres2]: { user_count: 1 } } });
        return true;
      } catch {
        return false;
      }
    }, `node ${n}: /channels?filter_by_prefix=presence-${tag}&info=user_count`, 5000);
    const all = await json(await sdk({ node: n }).get({ path: '/channels' }));
    for (const ch of [pub, pres1, pres2]) assert.deepEqual(all.channels[ch], {}, `node ${n} lists ${ch}: ${JSON.stringify(all)}`);
    assert.deepEqual(await json(await sdk({ node: n }).get({ path: '/channels', params: { filter_by_prefix: `public-${tag}` } })), { channels: { [pub]: {} } });
    // (subscription_count is refused on presence channels, as by Pusher.)
    assert.deepEqual(await channel(pres1, n, 'user_count'), { occupied: true, user_count: 2 });
    assert.deepEqual(await channel(pres2, n, 'user_count'), { occupied: true, user_count: 1 });
    assert.deepEqual(await channel(pub, n), { occupied: true });
    const trig = await json(await sdk({ node: n }).trigger(pub, 'e', {}, { info: 'subscription_count' }));
    assert.deepEqual(trig, { channels: { [pub]: { subscription_count: 4 } } }, `trigger info through node ${n}`);
  }

  // A node's own subscribers are counted at once on that node, no polling.
  const own = uniq('public-own-');
  const o2 = await connect({ name: 'own@2', node: 2 });
  await o2.subscribed(own);
  assert.deepEqual(await channel(own, 2, 'subscription_count'), { occupied: true, subscription_count: 1 }, 'node 2 counts its own subscriber at once');
  const o3 = await connect({ name: 'own@3', node: 3 });
  await o3.subscribed(own);
  assert.deepEqual(await channel(own, 3, 'subscription_count'), { occupied: true, subscription_count: 2 }, "node 3 counts its own subscriber at once (node 2's was reported)");

  // Everybody leaves: every node answers unoccupied.
  await cleanup();
  for (const n of NODES) {
    for (const ch of [pub, pres1, pres2, own]) {
      await eventually(async () => (await channel(ch, n)).occupied === false, `node ${n}: ${ch} unoccupied`, 5000);
    }
    const v = await json(await sdk({ node: n }).get({ path: '/channels', params: { filter_by_prefix: `presence-${tag}` } }));
    assert.deepEqual(v, { channels: {} });
    await eventually(async () => (await users(pres1, n)).length === 0, `node ${n}: nobody in ${pres1}`, 5000);
  }
});

// received is node n's broker.received_messages.
async function received(n) {
  return (await stats(n)).node.broker.received_messages;
}

test('interest: a node without subscribers of a channel receives none of its messages', { timeout: 25000 }, async () => {
  // Start from a quiet node 3: the clients of earlier tests are gone and it holds no
  // channel in the broker, and its received count stands still.
  await eventually(async () => {
    const s = await stats(3);
    return s.node.connections === 0 && s.node.broker.subscriptions === 0;
  }, 'node 3 to hold no connection and no broker subscription', 5000);
  let last = await received(3);
  await eventually(async () => {
    await sleep(300);
    const now = await received(3);
    const still = now === last;
    last = now;
    return still;
  }, "node 3's received_messages to stand still", 5000, 0);

  const ch = uniq('public-interest-');
  const s1 = await connect({ name: 's@1', node: 1 });
  const s2 = await connect({ name: 's@2', node: 2 });
  await s1.subscribed(ch);
  await s2.subscribed(ch);
  const r0 = await received(3);
  const r0n2 = await received(2);
  const N = 50;
  await Promise.all(
    [1, 2].map(async (n) => {
      const api = sdk({ node: n });
      for (let i = 0; i < N / 2; i++) assert.equal((await api.trigger(ch, `e${n}`, { i })).status, 200);
    }),
  );
  for (const s of [s1, s2]) {
    for (const n of [1, 2]) {
      await s.waitEvent(ch, `e${n}`, 5000, (e) => e.data.i === N / 2 - 1);
      assert.deepEqual(s.received(ch, `e${n}`).map((e) => e.data.i), range(N / 2), `${s.name}: events through node ${n}`);
    }
  }
  // A marker on node 3's path, after the 50: once it is in, they would have been too.
  const marker = uniq('public-marker-');
  const m3 = await connect({ name: 'marker@3', node: 3 });
  await m3.subscribed(marker);
  await sdk({ node: 1 }).trigger(marker, 'marker', {});
  await m3.waitEvent(marker, 'marker');
  const r1 = await received(3);
  assert.equal(r1 - r0, 1, `node 3 received ${r1 - r0} broker messages while ${N} events went to a channel it has no subscriber of (want only the marker)`);
  const r1n2 = await received(2);
  assert.ok(r1n2 - r0n2 >= N / 2, `node 2 received ${r1n2 - r0n2} broker messages, want at least the ${N / 2} published through node 1`);

  // With a subscriber on node 3, its count moves with the channel's messages.
  const s3 = await connect({ name: 's@3', node: 3 });
  await s3.subscribed(ch);
  const api = sdk({ node: 1 });
  for (let i = 0; i < N; i++) assert.equal((await api.trigger(ch, 'more', { i })).status, 200);
  await s3.waitEvent(ch, 'more', 5000, (e) => e.data.i === N - 1);
  assert.deepEqual(s3.received(ch, 'more').map((e) => e.data.i), range(N));
  const r2 = await received(3);
  assert.ok(r2 - r1 >= N, `node 3 received ${r2 - r1} broker messages with a subscriber, want at least ${N}`);
  const m = await admin('/metrics', 3);
  assert.ok(metric(m.text, 'herald_broker_received_messages_total') >= r2, 'herald_broker_received_messages_total agrees with /stats');
  assert.ok(metric(m.text, 'herald_broker_subscriptions') >= 2, 'herald_broker_subscriptions counts node 3 channels');
});
