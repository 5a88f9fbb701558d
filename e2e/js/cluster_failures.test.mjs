// Failures of a three-node cluster (e2e/cluster_test.go), in this order: Redis drops the
// nodes' pub/sub connections; Redis freezes (SIGSTOP) for 5 s; Redis dies for 5 s and
// comes back empty; node 3 is killed with -9; node 2 stalls (SIGSTOP) for longer than the
// lease and resumes. The Go harness owns the processes and acts on them when asked
// through control(). Every figure the tests measure is printed
// ("measured: ...") so that the log of a run has them.
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, cleanup, sdk, uniq, json, apiError, expectNone, sleep, eventually, stats, control, env, admin, metric } from './lib.mjs';

afterEach(cleanup);

const NODES = [1, 2, 3];
const OUTAGE_MS = 5000;
const RECOVERY_MS = 10000; // cross-node delivery is back within this of the end of an outage
const SLOW_503_MS = 2000; // an API publish while Redis is away answers 503 within this

function measured(what, ms) {
  console.log(`measured: ${what}: ${ms} ms`);
}

const person = (id) => ({ user_id: id, user_info: { name: id.toUpperCase() } });

function members(channel) {
  return Object.keys(channel.members.members).sort();
}

async function users(ch, n) {
  const body = await json(await sdk({ node: n }).get({ path: `/channels/${ch}/users` }));
  return body.users.map((u) => u.id).sort();
}

// brokers returns node n's /stats node.broker for each node n in ns.
async function brokers(ns = NODES) {
  const out = {};
  for (const n of ns) out[n] = (await stats(n)).node.broker;
  return out;
}

// rawTrigger publishes through node n with a signed request of its own, so that the
// answer's headers can be read; it returns {status, headers, text, ms}.
async function rawTrigger(n, channel, name) {
  const api = sdk({ node: n });
  const path = `/apps/${env.app.id}/events`;
  const body = JSON.stringify({ name, channels: [channel], data: '{}' });
  const qs = api.createSignedQueryString({ method: 'POST', path, body });
  const url = `http://${env.nodes[n - 1].host}:${env.nodes[n - 1].port}${path}?${qs}`;
  const start = Date.now();
  const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(10000) });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, ms: Date.now() - start };
}

// A crossing is a public channel with one receiver on each of nodes; probe publishes
// through node `from` until the receivers on the other nodes get one of its events
// (publishes refused with 503 meanwhile are expected), and returns how long that took.
async function crossing(tag, nodes = NODES) {
  const ch = uniq(`public-${tag}-`);
  const rx = {};
  for (const n of nodes) {
    rx[n] = await connect({ name: `${tag}-rx@${n}`, node: n });
    await rx[n].subscribed(ch);
  }
  let seq = 0;
  const probe = async (from, ms = RECOVERY_MS) => {
    const start = Date.now();
    const targets = nodes.filter((n) => n !== from).map((n) => rx[n]);
    const api = sdk({ node: from, timeout: 2000 });
    const ids = [];
    const got = () => targets.every((r) => r.events.find((e) => e.channel === ch && e.event === 'probe' && ids.includes(e.data.id)));
    const statuses = [];
    while (!got()) {
      if (Date.now() - start > ms) {
        throw new Error(`events published through node ${from} did not reach nodes ${nodes.filter((n) => n !== from)} within ${ms} ms (publish answers: ${statuses.join(', ')})\n${targets.map((r) => r.dump(10)).join('\n')}`);
      }
      const id = `${from}-${++seq}`;
      ids.push(id);
      try {
        const res = await api.trigger(ch, 'probe', { id });
        statuses.push(res.status);
      } catch (e) {
        statuses.push(e.status || e.message);
      }
      await sleep(200);
    }
    return Date.now() - start;
  };
  return { ch, rx, probe };
}

// assertUntouched checks that none of the clients lost its connection: one socket each,
// never closed, still connected.
function assertUntouched(clients) {
  for (const c of clients) {
    assert.equal(c.state, 'connected', `${c.name}: state`);
    assert.equal(c.tap.sockets.length, 1, `${c.name}: pusher-js reconnected\n${c.dump()}`);
    expectNone(c.frames, (f) => f.dir === 'close', `close of ${c.name}'s socket`);
  }
}

test('CLIENT KILL TYPE pubsub: the nodes resubscribe, count a reconnect, and events cross nodes again', { timeout: 25000 }, async () => {
  const x = await crossing('kill-pubsub');
  await x.probe(1, 5000);
  await x.probe(3, 5000);
  const before = await brokers();

  const res = await control('redis/kill-pubsub');
  const killedAt = Date.now();
  assert.ok(res.killed >= NODES.length, `CLIENT KILL TYPE pubsub killed ${res.killed} connections, want one per node at least`);

  for (const n of NODES) {
    const b = await eventually(async () => {
      const s = (await stats(n)).node.broker;
      return s.reconnects > before[n].reconnects && s.up ? s : null;
    }, `node ${n}: broker.reconnects to go up from ${before[n].reconnects} and broker.up`, RECOVERY_MS);
    assert.ok(b.subscriptions >= before[n].subscriptions, `node ${n}: ${b.subscriptions} broker subscriptions after the reconnect, ${before[n].subscriptions} before`);
  }
  measured('CLIENT KILL pubsub → reconnects counted and up on every node', Date.now() - killedAt);
  // Every node subscribed again: an event through any node reaches the other two.
  for (const from of NODES) await x.probe(from, RECOVERY_MS - (Date.now() - killedAt));
  const back = Date.now() - killedAt;
  measured('CLIENT KILL pubsub → events cross from every node', back);
  assert.ok(back < RECOVERY_MS, `cross-node delivery back after ${back} ms`);
  assertUntouched(Object.values(x.rx));
});

// outage sets up receivers on every node and a presence channel with one user per
// node, makes Redis unavailable with stop(), checks what must hold during the outage,
// ends it with start() after OUTAGE_MS, and checks the recovery.
async function outage(tag, stop, start) {
  const x = await crossing(tag);
  const room = uniq(`presence-${tag}-`);
  const ids = NODES.map((n) => `${tag}-u${n}`).sort();
  const present = {};
  for (const n of NODES) {
    present[n] = await connect({ name: `${tag}-u${n}@${n}`, node: n, user: person(`${tag}-u${n}`) });
  }
  const chans = {};
  for (const n of NODES) chans[n] = await present[n].subscribed(room);
  for (const n of NODES) await eventually(async () => members(chans[n]).length === 3, `${present[n].name} to list 3 members`);
  await x.probe(1, 5000);
  const clients = [...Object.values(x.rx), ...Object.values(present)];

  const mark = Object.fromEntries(NODES.map((n) => [n, present[n].events.entries.length]));
  // observe prints the member events each member got from the outage on (a node that
  // lost its entries announces its users again: that much is expected; the lists are
  // what must be right).
  const outageEvents = (n) =>
    present[n].events.entries.slice(mark[n]).filter((e) => e.channel === room && e.event.startsWith('pusher:member_')).map((e) => `${e.event.slice(7)} ${e.data.id}`);
  const observe = () => {
    for (const n of NODES) console.log(`observed: ${tag}: ${present[n].name} got ${outageEvents(n).join(', ') || 'no member events'} from the outage on`);
  };
  await stop();
  const downAt = Date.now();
  try {
    // An API publish answers 503 within about a second, through every node.
    for (const n of NODES) {
      const r = await rawTrigger(n, x.ch, 'during-outage');
      measured(`${tag}: 503 from node ${n}`, r.ms);
      assert.equal(r.status, 503, `node ${n}: publish during the outage answered ${r.status} ${r.text}`);
      assert.ok(r.ms < SLOW_503_MS, `node ${n}: 503 after ${r.ms} ms, want < ${SLOW_503_MS}`);
      assert.equal(typeof JSON.parse(r.text).error, 'string', r.text);
      assert.ok(r.headers.get('retry-after'), `node ${n}: no Retry-After on the 503`);
    }
    // The nodes say the broker is down, and stay ready: every node shares the Redis,
    // and a load balancer that dropped them all would help nobody.
    for (const n of NODES) {
      await eventually(async () => metric((await admin('/metrics', n)).text, 'herald_broker_up') === 0, `node ${n}: herald_broker_up 0`, 5000);
      const r = await admin('/readyz', n);
      assert.equal(r.status, 200, `node ${n}: /readyz during the outage answered ${r.status} ${r.text}`);
    }
    const sdkStart = Date.now();
    const e = await apiError(sdk({ node: 2 }).trigger(x.ch, 'during-outage', {}));
    const sdkMs = Date.now() - sdkStart;
    measured(`${tag}: 503 to the SDK through node 2`, sdkMs);
    assert.equal(e.status, 503, e.text);
    assert.ok(sdkMs < SLOW_503_MS, `SDK publish: 503 after ${sdkMs} ms`);
    // Connections stay and pings are answered, all through the outage.
    while (Date.now() - downAt < OUTAGE_MS) {
      for (const c of clients) await c.ping(2000);
      await sleep(500);
    }
    assertUntouched(clients);
  } finally {
    await start();
  }
  const upAt = Date.now();
  measured(`${tag}: outage length`, upAt - downAt);

  // Cross-node delivery resumes, from every node.
  for (const from of NODES) await x.probe(from, RECOVERY_MS - (Date.now() - upAt));
  const resumed = Date.now() - upAt;
  measured(`${tag}: cross-node delivery back after Redis`, resumed);
  assert.ok(resumed < RECOVERY_MS, `cross-node delivery back after ${resumed} ms`);
  for (const n of NODES) {
    await eventually(async () => (await stats(n)).node.broker.up, `node ${n}: broker.up`, RECOVERY_MS);
  }

  // Presence is right again: every node lists every member, through the API and in the
  // clients' member lists.
  const presenceWithin = env.nodeLease + 5000;
  for (const n of NODES) {
    let last;
    await eventually(async () => {
      last = await users(room, n).catch((err) => `error: ${err.message} ${err.body || ''}`);
      return JSON.stringify(last) === JSON.stringify(ids);
    }, `/users of ${room} through node ${n} to list ${ids}`, presenceWithin - (Date.now() - upAt)).catch((e) => {
      throw new Error(`${e.message}; it lists ${JSON.stringify(last)}`);
    });
  }
  measured(`${tag}: /users right on every node after Redis`, Date.now() - upAt);
  const listsRight = () => NODES.every((n) => JSON.stringify(members(chans[n])) === JSON.stringify(ids));
  await eventually(listsRight, `every member to list ${ids}`, 5000).catch((e) => {
    observe();
    const lists = NODES.map((n) => `${present[n].name} lists ${members(chans[n])} (it got ${outageEvents(n).join(', ') || 'no member events'} from the outage on)`);
    throw new Error(`${e.message}:\n  ${lists.join('\n  ')}\n  while /users lists ${ids} through every node`);
  });
  measured(`${tag}: clients' member lists right after Redis`, Date.now() - upAt);
  observe();
  // The channel counts are right again too: one subscriber per node.
  for (const n of NODES) {
    let last;
    await eventually(async () => {
      last = await json(await sdk({ node: n }).get({ path: `/channels/${x.ch}`, params: { info: 'subscription_count' } }));
      return last.subscription_count === 3;
    }, `node ${n}: ${x.ch} subscription_count 3`, 5000).catch((e) => {
      throw new Error(`${e.message}; it answers ${JSON.stringify(last)}`);
    });
  }
  measured(`${tag}: subscription_count right on every node after Redis`, Date.now() - upAt);
  // An event published now reaches everyone once, and the connections are the ones
  // from before the outage.
  await sdk({ node: 3 }).trigger(x.ch, 'after', {});
  for (const r of Object.values(x.rx)) await r.waitEvent(x.ch, 'after');
  await sdk({ node: 1 }).trigger(room, 'after', {});
  for (const n of NODES) await present[n].waitEvent(room, 'after');
  assertUntouched(clients);
  // What was refused with 503 was not published: it reached nobody, then or later.
  for (const r of Object.values(x.rx)) {
    expectNone(r.frames, (f) => f.dir === 'in' && f.event === 'during-outage', `an event refused with 503 delivered to ${r.name}`);
  }
}

test('Redis frozen (SIGSTOP) for 5 s: connections stay, publishes get 503 fast, the cluster recovers', { timeout: 30000 }, async () => {
  await outage(
    'freeze',
    () => control('redis/freeze'),
    () => control('redis/thaw'),
  );
});

test('Redis killed for 5 s and restarted empty: connections stay, publishes get 503 fast, presence is rebuilt', { timeout: 30000 }, async () => {
  await outage(
    'restart',
    () => control('redis/kill'),
    () => control('redis/restart'),
  );
});

test('kill -9 of node 3: its users leave the other nodes within the lease, its subscribers leave the counts', { timeout: 25000 }, async () => {
  assert.ok(env.nodeLease > 0, 'E2E_NODE_LEASE_MS is set');
  const room = uniq('presence-crash-');
  const pub = uniq('public-crash-');
  // Watchers on nodes 1 and 2; victims only on node 3; 'both' on nodes 2 and 3.
  const w1 = await connect({ name: 'w1@1', node: 1, user: person('w1') });
  const w2 = await connect({ name: 'w2@2', node: 2, user: person('w2') });
  const v3a = await connect({ name: 'victim-a@3', node: 3, user: person('victim-a') });
  const v3b = await connect({ name: 'victim-b@3', node: 3, user: person('victim-b') });
  const both2 = await connect({ name: 'both@2', node: 2, user: person('both') });
  const both3 = await connect({ name: 'both@3', node: 3, user: person('both') });
  const chW1 = await w1.subscribed(room);
  const chW2 = await w2.subscribed(room);
  for (const c of [v3a, v3b, both2, both3]) await c.subscribed(room);
  const watchers = [w1, w2];
  for (const w of watchers) {
    await eventually(async () => members(w === w1 ? chW1 : chW2).length === 5, `${w.name} to list 5 members`);
  }
  // pub: one subscriber on node 1, two on node 3.
  for (const c of [w1, v3a, v3b]) await c.subscribed(pub);
  await eventually(async () => {
    const v = await json(await sdk({ node: 1 }).get({ path: `/channels/${pub}`, params: { info: 'subscription_count' } }));
    return v.subscription_count === 3;
  }, `${pub} subscription_count 3 through node 1`);
  assert.equal((await stats(1)).node.nodes.length, 3);

  const t0 = Date.now();
  const res = await control('nodes/3/kill');
  measured('kill -9 of node 3 (control round trip)', Date.now() - t0);
  assert.ok(res.pid > 0);

  // member_removed for node 3's users, at both watchers, within the lease plus 2 s.
  const deadline = env.nodeLease + 2000;
  for (const w of watchers) {
    for (const id of ['victim-a', 'victim-b']) {
      await w.waitEvent(room, 'pusher:member_removed', deadline + 3000 - (Date.now() - t0), (e) => e.data.id === id);
      const ms = Date.now() - t0;
      measured(`kill -9 → member_removed ${id} at ${w.name}`, ms);
      assert.ok(ms < deadline, `member_removed for ${id} at ${w.name} ${ms} ms after the kill, want < ${deadline}`);
    }
  }
  // 'both' is still on node 2: not removed. A marker after the departures proves it.
  await sdk({ node: 1 }).trigger(room, 'marker', {});
  for (const w of watchers) await w.waitEvent(room, 'marker');
  for (const w of watchers) {
    expectNone(w.events, (e) => e.channel === room && e.event === 'pusher:member_removed' && e.data.id === 'both', `member_removed for 'both' (still on node 2) at ${w.name}`);
    assert.equal(w.received(room, 'pusher:member_removed').length, 2, `${w.name}: one member_removed per victim`);
  }
  assert.deepEqual(members(chW1), ['both', 'w1', 'w2']);
  assert.deepEqual(members(chW2), ['both', 'w1', 'w2']);
  for (const n of [1, 2]) assert.deepEqual(await users(room, n), ['both', 'w1', 'w2'], `/users through node ${n}`);

  // The dead node's subscribers leave the counts.
  let count;
  await eventually(async () => {
    count = (await json(await sdk({ node: 1 }).get({ path: `/channels/${pub}`, params: { info: 'subscription_count' } }))).subscription_count;
    return count === 1;
  }, `${pub} subscription_count through node 1 to drop to 1 (node 1's own)`, deadline + 3000 - (Date.now() - t0)).catch((e) => {
    throw new Error(`${e.message}; it says ${count}`);
  });
  measured('kill -9 → subscription_count without node 3', Date.now() - t0);
  await eventually(async () => (await stats(1)).node.nodes.length === 2, 'node 1 to list 2 live nodes', 5000);
  await eventually(async () => (await stats(2)).node.nodes.length === 2, 'node 2 to list 2 live nodes', 5000);
  assertUntouched([w1, w2, both2]);
});

test('node 2 stalls (SIGSTOP) for longer than the lease: taken for dead, then back with its users and connections', { timeout: 30000 }, async () => {
  // Node 3 is dead (the test before): nodes 1 and 2 are left.
  const alive = [1, 2];
  const x = await crossing('stall', alive);
  const room = uniq('presence-stall-');
  const ids = ['stall-a', 'stall-b'];
  const a = await connect({ name: 'stall-a@1', node: 1, user: person('stall-a') });
  const b = await connect({ name: 'stall-b@2', node: 2, user: person('stall-b') });
  const chA = await a.subscribed(room);
  const chB = await b.subscribed(room);
  const listsRight = () => JSON.stringify(members(chA)) === JSON.stringify(ids) && JSON.stringify(members(chB)) === JSON.stringify(ids);
  await eventually(listsRight, 'both members to list both');
  await x.probe(1, 5000);
  const markA = a.events.entries.length;
  const markB = b.events.entries.length;
  const memberEvents = (c, mark) =>
    c.events.entries.slice(mark).filter((e) => e.channel === room && e.event.startsWith('pusher:member_')).map((e) => `${e.event.slice(7)} ${e.data.id}`);

  const stall = env.nodeLease + 3000;
  await control('nodes/2/freeze');
  const t0 = Date.now();
  try {
    // The cluster cannot tell a stalled node from a dead one: node 1 announces that
    // node 2's user left, within the lease plus 2 s.
    await a.waitEvent(room, 'pusher:member_removed', env.nodeLease + 3000, (e) => e.data.id === 'stall-b');
    const ms = Date.now() - t0;
    measured('node 2 stopped → member_removed stall-b at stall-a@1', ms);
    assert.ok(ms < env.nodeLease + 2000, `member_removed ${ms} ms after node 2 stopped`);
    assert.deepEqual(await users(room, 1), ['stall-a'], '/users through node 1 while node 2 is stopped');
    await sleep(Math.max(0, stall - (Date.now() - t0)));
  } finally {
    await control('nodes/2/thaw');
  }
  const upAt = Date.now();

  // Node 2 resumes: it finds itself dropped, adds its users again, and they are back
  // everywhere: through the API and in both clients' member lists (b's own included).
  for (const n of alive) {
    let last;
    await eventually(async () => JSON.stringify((last = await users(room, n))) === JSON.stringify(ids), `/users through node ${n} to list ${ids}`, env.nodeLease + 5000).catch((e) => {
      throw new Error(`${e.message}; it lists ${JSON.stringify(last)}`);
    });
  }
  measured('node 2 resumed → /users lists its user again', Date.now() - upAt);
  await eventually(listsRight, `both members to list ${ids}`, 5000).catch((e) => {
    throw new Error(
      `${e.message}:\n  ${a.name} lists ${members(chA)} (count ${chA.members.count}; got ${memberEvents(a, markA).join(', ') || 'no member events'} since the stall)` +
        `\n  ${b.name} lists ${members(chB)} (count ${chB.members.count}; got ${memberEvents(b, markB).join(', ') || 'no member events'} since the stall)` +
        `\n  while /users lists ${ids} through both nodes\n${b.dump()}`,
    );
  });
  measured("node 2 resumed → both clients' member lists right", Date.now() - upAt);
  console.log(`observed: stall: ${a.name} got ${memberEvents(a, markA).join(', ')}; ${b.name} got ${memberEvents(b, markB).join(', ') || 'no member events'}`);
  // Events cross both ways again, and node 2's clients kept their connections.
  for (const from of alive) await x.probe(from, RECOVERY_MS - (Date.now() - upAt));
  measured('node 2 resumed → events cross both ways', Date.now() - upAt);
  assertUntouched([a, b, ...Object.values(x.rx)]);
});
