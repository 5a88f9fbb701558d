// Webhooks, the watchlist and subscription counts on three herald nodes joined through
// Redis (e2e/webhooks_test.go TestClusterWebhooks). Every node posts the app's webhooks
// to the receiver this file runs (lib.mjs WebhookReceiver, which verifies each request
// with the `pusher` SDK's webhook() helper and an HMAC of its own): whatever node a
// client is on, the cluster tells the app once, as one server would.
//
// Each node has its own webhook queue, so "nothing more came" is checked after a
// marker from every node (markers()), and departures after the 3 s grace.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { connect, cleanup, uniq, sleep, eventually, env, expectNone, webhookReceiver, admin, metricSum } from './lib.mjs';

const NODES = [1, 2, 3];
const GRACE = 3000; // the departure grace of channel_vacated and member_removed

let hooks;
before(async () => {
  hooks = await webhookReceiver({ '/all': env.app });
});
after(async () => {
  await hooks?.close();
});
afterEach(async () => {
  await cleanup();
  hooks.check();
});

function measured(what, value, unit = 'ms') {
  console.log(`measured: ${what}: ${value}${unit ? ' ' + unit : ''}`);
}

// markers subscribes a fresh channel on every node and waits for the three
// channel_occupied: the node whose subscriber occupied a channel tells the app, and a
// node's hook delivers in order, so what any node sent before has arrived.
async function markers() {
  await Promise.all(
    NODES.map(async (n) => {
      const ch = uniq(`marker${n}-`);
      const m = await connect({ name: `marker@${n}`, node: n });
      await m.subscribed(ch);
      await hooks.wait('/all', { name: 'channel_occupied', channel: ch });
      m.disconnect();
    }),
  );
}

// count is how many delivered events equal want.
const count = (want) => hooks.got('/all', want).length;

function once(want) {
  const got = hooks.got('/all', want);
  assert.equal(got.length, 1, `want exactly one ${JSON.stringify(want)}, got ${got.length}\n${hooks.dump()}`);
  assert.deepEqual(got[0].ev, want);
}

test('one channel_occupied and channel_vacated per channel, one member_added and member_removed per user, and none while another node has a subscriber', { timeout: 40000 }, async () => {
  const pub = uniq('public-spread-');
  const pres = uniq('presence-spread-');
  // carol on every node, dave on nodes 2 and 3; they all subscribe at once.
  const spread = [[1, 'carol'], [2, 'carol'], [3, 'carol'], [2, 'dave'], [3, 'dave']];
  const cs = await Promise.all(spread.map(([n, u]) => connect({ name: `${u}@${n}`, node: n, user: { user_id: u } })));
  await Promise.all(cs.flatMap((c) => [c.subscribed(pub), c.subscribed(pres)]));
  for (const ch of [pub, pres]) await hooks.wait('/all', { name: 'channel_occupied', channel: ch });
  for (const u of ['carol', 'dave']) await hooks.wait('/all', { name: 'member_added', channel: pres, user_id: u });

  // A client event relayed to every node is one client_event, from the sender's node.
  const [c1] = cs;
  c1.pusher.channel(pres).trigger('client-hello', { from: 1 });
  for (const c of cs.slice(1)) await c.waitEvent(pres, 'client-hello');
  await hooks.wait('/all', { name: 'client_event', channel: pres });
  await markers();
  for (const ch of [pub, pres]) once({ name: 'channel_occupied', channel: ch });
  for (const u of ['carol', 'dave']) once({ name: 'member_added', channel: pres, user_id: u });
  once({ name: 'client_event', channel: pres, event: 'client-hello', data: '{"from":1}', socket_id: c1.socketId, user_id: 'carol' });

  const gone = () => count({ name: 'channel_vacated', channel: pub }) + count({ name: 'channel_vacated', channel: pres }) + hooks.got('/all', { name: 'member_removed', channel: pres }).length;
  // Node 1 empties, then node 2 (dave still on node 3): nothing, a grace later.
  for (const n of [1, 2]) {
    for (const c of cs.filter((x) => x.node === n)) c.disconnect();
    await sleep(GRACE + 500);
    await markers();
    assert.equal(gone(), 0, `vacated or removed after node ${n} emptied, with subscribers left on node ${n + 1}\n${hooks.dump()}`);
  }
  // Node 3 empties: the channels are vacated and the users gone, once, after the grace.
  const t = Date.now();
  for (const c of cs.filter((x) => x.node === 3)) c.disconnect();
  const arrivals = [];
  for (const want of [
    { name: 'channel_vacated', channel: pub },
    { name: 'channel_vacated', channel: pres },
    { name: 'member_removed', channel: pres, user_id: 'carol' },
    { name: 'member_removed', channel: pres, user_id: 'dave' },
  ]) {
    arrivals.push((await hooks.wait('/all', want, GRACE + 4000)).at - t);
  }
  measured('cluster: channel_vacated and member_removed after the last leave (min..max of 4)', `${Math.min(...arrivals)}..${Math.max(...arrivals)}`);
  assert.ok(Math.min(...arrivals) >= GRACE - 100, `after ${arrivals} ms: want at least the ${GRACE} ms grace`);
  assert.ok(Math.max(...arrivals) <= GRACE + 2000, `after ${arrivals} ms: want within 2 s of the grace`);
  await markers();
  for (const ch of [pub, pres]) once({ name: 'channel_vacated', channel: ch });
  for (const u of ['carol', 'dave']) once({ name: 'member_removed', channel: pres, user_id: u });
});

test('watchlist across nodes: a watcher on node 1 hears the users signing in and out on nodes 2 and 3', { timeout: 15000 }, async () => {
  const [x, y] = ['x-', 'y-'].map(uniq);
  const watch = async (name, n) => {
    const w = await connect({ name, node: n, userData: { id: uniq('watcher-'), watchlist: [x, y] } });
    w.online = [];
    w.offline = [];
    w.offlineAt = [];
    w.pusher.user.watchlist.bind('online', (e) => w.online.push([...e.user_ids].sort()));
    w.pusher.user.watchlist.bind('offline', (e) => {
      w.offline.push([...e.user_ids].sort());
      w.offlineAt.push(Date.now());
    });
    await w.signin();
    return w;
  };
  const signedIn = async (id, n) => {
    const c = await connect({ name: `${id}@${n}`, node: n, userData: { id } });
    await c.signin();
    return c;
  };
  const w1 = await watch('watcher@1', 1);
  const x2 = await signedIn(x, 2);
  await eventually(() => w1.online.length === 1, 'x online at the watcher on node 1');
  const y3 = await signedIn(y, 3);
  await eventually(() => w1.online.length === 2, 'y online at the watcher on node 1');
  assert.deepEqual(w1.online, [[x], [y]]);
  // A watcher signing in on node 3 gets the online set, wherever the users are.
  const w3 = await watch('watcher@3', 3);
  await eventually(() => w3.online.length === 1, 'the online set at sign-in on node 3');
  assert.deepEqual(w3.online, [[x, y]]);

  // x on node 3 too, then x leaves node 2: x is still online.
  const x3 = await signedIn(x, 3);
  x2.disconnect();
  await sleep(300);
  const t = Date.now();
  y3.disconnect();
  for (const w of [w1, w3]) await eventually(() => w.offline.length === 1, `${w.name}: y offline`);
  measured('cluster: watchlist offline at the watchers on nodes 1 and 3 after the last connection left node 3', JSON.stringify([w1, w3].map((w) => w.offlineAt[0] - t)));
  await sleep(300);
  for (const w of [w1, w3]) assert.deepEqual(w.offline, [[y]], `${w.name}: y offline, not x (still on node 3)`);
  x3.disconnect();
  for (const w of [w1, w3]) await eventually(() => w.offline.length === 2, `${w.name}: x offline`);
  await sleep(200);
  assert.deepEqual(w1.online, [[x], [y]], 'watcher@1: online events');
  assert.deepEqual(w3.online, [[x, y]], 'watcher@3: online events');
  for (const w of [w1, w3]) assert.deepEqual(w.offline, [[y], [x]], `${w.name}: offline events`);
});

test('subscription_count across nodes: a client on node 1 counts the subscribers of nodes 2 and 3; one webhook per change', { timeout: 15000 }, async () => {
  const ch = uniq('counted-');
  const seen = {};
  const join = async (name, n) => {
    const c = await connect({ name, node: n });
    seen[name] = [];
    c.subscribe(ch).bind('pusher:subscription_count', (d) => seen[name].push(d.subscription_count));
    await c.subscribed(ch);
    return c;
  };
  const sees = (names, n) => Promise.all(names.map((x) => eventually(() => seen[x].at(-1) === n, `${x} to see subscription_count ${n} (saw ${JSON.stringify(seen[x])})`)));
  const a = await join('a@1', 1);
  await sees(['a@1'], 1);
  const b = await join('b@2', 2);
  await sees(['a@1', 'b@2'], 2);
  const c = await join('c@3', 3);
  await sees(['a@1', 'b@2', 'c@3'], 3);
  c.disconnect();
  await sees(['a@1', 'b@2'], 2);
  b.pusher.unsubscribe(ch);
  await sees(['a@1'], 1);
  assert.equal(a.pusher.channel(ch).subscriptionCount, 1);
  await markers();
  assert.deepEqual(seen['a@1'], [1, 2, 3, 2, 1], 'a@1 saw each count once, in order');
  assert.deepEqual(seen['b@2'], [2, 3, 2], 'b@2 saw each count once, in order');
  // Each node batches its own changes (250 ms), so changes made on different nodes
  // within a batch window may arrive in any order: one webhook per change, in some order.
  const counts = hooks.got('/all', { name: 'subscription_count', channel: ch }).map((e) => e.ev.subscription_count);
  measured('cluster: subscription_count webhooks in the order they arrived', JSON.stringify(counts), '');
  assert.deepEqual([...counts].sort(), [1, 1, 2, 2, 3], 'one subscription_count webhook per change, from the node that changed it');
  expectNone(a.frames, (f) => f.dir === 'in' && f.event === 'pusher:error', 'pusher:error at a@1');
});

test('every node drains its queue, drops nothing, and counts as sent exactly what the receiver got', { timeout: 15000 }, async () => {
  // The departures of the last test settle after the grace.
  await sleep(GRACE + 700);
  const sent = async () => {
    let sum = 0;
    for (const n of NODES) {
      const m = (await admin('/metrics', n)).text;
      assert.equal(metricSum(m, 'herald_webhooks_queued', `app="${env.app.id}"`), 0, `node ${n}: herald_webhooks_queued`);
      assert.equal(metricSum(m, 'herald_webhooks_dropped_total', `app="${env.app.id}"`), 0, `node ${n}: herald_webhooks_dropped_total`);
      assert.equal(metricSum(m, 'herald_webhooks_failed_total', `app="${env.app.id}"`), 0, `node ${n}: herald_webhooks_failed_total`);
      sum += metricSum(m, 'herald_webhooks_sent_total', `app="${env.app.id}"`);
    }
    return sum;
  };
  await eventually(async () => (await sent()) === hooks.events.entries.length, `the nodes' herald_webhooks_sent_total to add up to the ${hooks.events.entries.length} events received`);
  assert.equal(hooks.requests.filter((r) => r.status !== 200).length, 0, 'every request was answered 200');
  const names = {};
  for (const e of hooks.events.entries) names[e.ev.name] = (names[e.ev.name] || 0) + 1;
  measured('cluster: events received, by type', JSON.stringify(names), '');
});
