package presence

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/internal/warnlimit"
)

var _ Store = (*Redis)(nil)

// warnEvery is how often one kind of warning is logged at most (internal/warnlimit).
const warnEvery = 10 * time.Second

// Defaults of RedisConfig.
const (
	DefaultRedisPrefix = "herald"
	DefaultLease       = 15 * time.Second
	DefaultOpTimeout   = 2 * time.Second
)

// RedisConfig configures NewRedis.
type RedisConfig struct {
	// Client is a *redis.Client or a *redis.ClusterClient; required. The store does not
	// close it. It must have ContextTimeoutEnabled set, so that OpTimeout and the
	// callers' contexts bound network waits, and should have MaxRetries -1: go-redis
	// retries a command whose reply was lost, and a replayed Add reports first=false
	// for a user whose first connection it was (the store retries what must be retried
	// itself).
	Client redis.UniversalClient
	// Prefix starts every key; it must not contain '{' or '}'. Default "herald".
	Prefix string
	// NodeID is the node part of this node's socket ids; required (non-zero), and unique
	// among the live nodes of the cluster.
	NodeID uint32
	// Lease is how long the node's entries outlive it when it dies without Close
	// (--node-lease): the cluster removes them, and reports the departures, within
	// about Lease plus one second. Default 15 s; at least 100 ms.
	Lease time.Duration
	// OpTimeout caps one store call. Default 2 s.
	OpTimeout time.Duration
	// DepartureGrace is how long a departure or a vacancy stays pending (see
	// ConfirmDeparture and ConfirmVacated); a return within it cancels both for
	// webhooks. Default 3 s (Pusher's).
	DepartureGrace time.Duration
	// Logger gets warnings (rate-limited) and debug lines. Default: discard.
	Logger *slog.Logger
}

// Redis is the Store of one node of a cluster whose state is in Redis: a single server
// or a Redis Cluster. See the package doc for the key layout, leases and cleanup.
type Redis struct {
	client    redis.UniversalClient
	ordered   bool // one server, commands of a pipeline run in order: SADD goes before the script
	prefix    string
	id        uint32
	h         Handler
	lease     time.Duration
	opTimeout time.Duration
	grace     time.Duration
	log       *slog.Logger
	warn      *warnlimit.Limiter

	keyNodes, keyClaims, keyClaimers string

	base       context.Context // of the background calls; cancelled by shutdown
	cancelBase context.CancelFunc
	stop       chan struct{}
	renewDone  chan struct{}
	sweepDone  chan struct{}
	retryDone  chan struct{}
	paused     atomic.Bool                    // tests: the node's loops act as if frozen
	claimHook  atomic.Pointer[func([]string)] // tests: called after each claim, before cleaning
	unfinished map[string]bool                // sweep loop only: claims whose cleaning failed

	mu sync.Mutex
	// closed refuses new calls; inflight counts calls under way, and idle is closed
	// when closed and none is left, so that Close gives up the lease only after the
	// last Add landed.
	closed   bool
	inflight int
	idle     chan struct{}
	// name is the node's registered name; epoch counts its changes. pch, apps and srem
	// are the bookkeeping of that name's sets, forgotten when it changes.
	name  string
	inc   int64
	epoch uint64
	pch   map[string]*chanState // presence channel → this node's entries there
	gen   uint64                // last pch member generation handed out
	srem  []string              // pch members to drop at the next renewal
	apps  map[string]bool       // apps known to be in the apps set
	nodes []Node                // live nodes, as the last renewal saw them
	// retries are the removals to redo, at most one per channel and connection.
	retries map[retryKey]*retry
}

// chanState is this node's share of one presence channel: n counts its entries there
// plus its Adds under way, so that the channel leaves the node's pch set only after
// its last entry left. member is the pch set member, "<channel>#<generation>": a new
// generation each time the channel enters the set, so that a late SREM of an older
// generation can never drop a newer SADD (they may travel on different connections).
type chanState struct {
	n      int
	member string
	saved  bool // the SADD of member was acknowledged
}

type retryKey struct{ channel, conn string }

// retry is a removal to redo: a Remove that failed, or the undoing of an Add that failed
// (own), which may or may not have been applied.
type retry struct {
	channel, conn, user string
	own                 bool
	st                  *chanState    // the failed Add's bookkeeping (own only)
	running             chan struct{} // non-nil while the retrier runs it; closed after
}

// maxSrem bounds the pch members waiting for the next renewal to drop them; past it,
// members stay in the set (harmless: cleanup finds nothing there) until the node's
// sets are deleted.
const maxSrem = 4096

// NewRedis registers node cfg.NodeID in the cluster and returns its Store. It returns
// ErrNodeIDInUse if a live node already has that id. h gets the departures this node
// learns of and the resets of its own entries; nil ignores them.
func NewRedis(ctx context.Context, cfg RedisConfig, h Handler) (*Redis, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("presence: new redis: %w", err)
	}
	switch {
	case cfg.Client == nil:
		return nil, errors.New("presence: new redis: no client")
	case cfg.NodeID == 0:
		return nil, errors.New("presence: new redis: node id must not be 0")
	case strings.ContainsAny(cfg.Prefix, "{}"):
		return nil, fmt.Errorf("presence: new redis: prefix %q must not contain '{' or '}'", cfg.Prefix)
	case cfg.Lease != 0 && cfg.Lease < 100*time.Millisecond:
		return nil, fmt.Errorf("presence: new redis: lease %v is shorter than 100ms", cfg.Lease)
	}
	s := &Redis{
		client:     cfg.Client,
		prefix:     cmp.Or(cfg.Prefix, DefaultRedisPrefix),
		id:         cfg.NodeID,
		h:          h,
		lease:      cmp.Or(cfg.Lease, DefaultLease),
		opTimeout:  cmp.Or(cfg.OpTimeout, DefaultOpTimeout),
		grace:      cmp.Or(cfg.DepartureGrace, DefaultDepartureGrace),
		log:        cfg.Logger,
		stop:       make(chan struct{}),
		renewDone:  make(chan struct{}),
		sweepDone:  make(chan struct{}),
		retryDone:  make(chan struct{}),
		unfinished: make(map[string]bool),
		idle:       make(chan struct{}),
		pch:        make(map[string]*chanState),
		apps:       make(map[string]bool),
		retries:    make(map[retryKey]*retry),
	}
	_, s.ordered = cfg.Client.(*redis.Client)
	if s.h == nil {
		s.h = nopHandler{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.warn = warnlimit.New(s.log, warnEvery)
	s.base, s.cancelBase = context.WithCancel(context.Background())
	s.keyNodes = s.prefix + ":{nodes}"
	s.keyClaims = s.keyNodes + ":claims"
	s.keyClaimers = s.keyNodes + ":claimers"

	s.inc = time.Now().UnixMicro()
	name := s.nameOf(s.inc)
	octx, cancel := context.WithTimeout(ctx, s.opTimeout)
	res, err := registerScript.Run(octx, s.client, []string{s.keyNodes},
		name, s.lease.Milliseconds(), s.idPrefix(), "0").Slice()
	cancel()
	if err != nil {
		s.cancelBase()
		if cerr := callerDone(ctx); cerr != nil {
			return nil, fmt.Errorf("presence: new redis: %w", cerr)
		}
		return nil, fmt.Errorf("presence: new redis: register: %w: %v", ErrUnavailable, err)
	}
	reg := parseRegister(res)
	if !reg.ok {
		s.cancelBase()
		return nil, fmt.Errorf("%w: id %d is node %s's, whose lease runs out in %v (or at once when it closes)",
			ErrNodeIDInUse, s.id, reg.holder, reg.holderLeft.Round(time.Millisecond))
	}
	s.name, s.nodes = name, reg.nodes
	go s.renewLoop()
	go s.sweepLoop()
	go s.retryLoop()
	return s, nil
}

type nopHandler struct{}

func (nopHandler) HandleDepartures([]Departure) {}
func (nopHandler) HandleVacated([]Transition)   {}
func (nopHandler) HandleReset()                 {}

// Name is this node's current name, "<NodeID>-<incarnation>"; it changes when the node
// takes a new incarnation after its entries were lost.
func (s *Redis) Name() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.name
}

func (s *Redis) nameOf(inc int64) string { return s.idPrefix() + strconv.FormatInt(inc, 10) }

func (s *Redis) idPrefix() string { return strconv.FormatUint(uint64(s.id), 10) + "-" }

// Keys. A presence channel's three hashes share the hash tag {K}; an app's totals and
// the nodes' counts share {A}; the registry and the nodes' sets share {nodes}.
// pendTTL is the life of a channel's pending departures and an app's pending vacancies
// when nobody settles them (the node that should have died within the grace), in ms:
// long enough never to cut a grace short.
func (s *Redis) pendTTL() int64 { return (10 * s.grace).Milliseconds() }

func (s *Redis) channelKeys(channel string) []string {
	base := s.prefix + ":p:{" + channel + "}:"
	return []string{base + "u", base + "c", base + "n", base + "d"}
}

func (s *Redis) appKeys(app, name string) []string {
	totals := s.prefix + ":s:{" + app + "}"
	return []string{totals, totals + ":" + name, totals + ":vacated"}
}

func (s *Redis) pchKey(name string) string  { return s.keyNodes + ":pch:" + name }
func (s *Redis) appsKey(name string) string { return s.keyNodes + ":apps:" + name }

// checkTag refuses names that would break the hash tag: an empty one, or one starting
// with '}', would leave "{}" in the key, and Redis would hash whole keys instead.
func checkTag(op, what, v string) error {
	if v == "" || v[0] == '}' {
		return fmt.Errorf("presence: %s: invalid %s name %q", op, what, v)
	}
	return nil
}

// begin starts a call: ctx is checked first, then Close. The returned context is bounded
// by OpTimeout; done must be called when the call ends.
func (s *Redis) begin(ctx context.Context, op string) (context.Context, context.CancelFunc, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("presence: %s: %w", op, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, ErrClosed
	}
	s.inflight++
	s.mu.Unlock()
	octx, cancel := context.WithTimeout(ctx, s.opTimeout)
	return octx, func() {
		cancel()
		s.mu.Lock()
		if s.inflight--; s.inflight == 0 && s.closed {
			close(s.idle)
		}
		s.mu.Unlock()
	}, nil
}

// fail turns a failed Redis call into the error a caller gets: the caller's own context
// error if that is what ended it, ErrUnavailable otherwise.
func (s *Redis) fail(ctx context.Context, op string, err error) error {
	if cerr := callerDone(ctx); cerr != nil {
		return fmt.Errorf("presence: %s: %w", op, cerr)
	}
	s.warn.Warn(op, "presence: redis call failed", "op", op, "err", err)
	return fmt.Errorf("presence: %s: %w: %v", op, ErrUnavailable, err)
}

// callerDone is ctx's error, or DeadlineExceeded once its deadline has passed: the
// socket deadline go-redis derives from it can fire before ctx's own timer does.
func callerDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// Add records connID as a connection of this node; see Store. The pch set of the node
// gets the channel first (pipelined before the script on a single server; before it,
// in a call of its own, on a cluster), so that a crash never leaves an entry that cleanup
// cannot find.
func (s *Redis) Add(ctx context.Context, channel, connID string, m Member, maxMembers int) (bool, error) {
	j, err := s.add(ctx, "add", channel, connID, m, maxMembers, addScript)
	return j.First, err
}

// Join is Add and Members in one script call; see Store.
func (s *Redis) Join(ctx context.Context, channel, connID string, m Member, maxMembers int) (Joined, error) {
	return s.add(ctx, "join", channel, connID, m, maxMembers, joinScript)
}

// add runs addScript or joinScript; the rest of Joined is read from joinScript's reply.
func (s *Redis) add(ctx context.Context, op, channel, connID string, m Member, maxMembers int, script *redis.Script) (Joined, error) {
	if err := checkTag(op, "channel", channel); err != nil {
		return Joined{}, err
	}
	octx, done, err := s.begin(ctx, op)
	if err != nil {
		return Joined{}, err
	}
	defer done()
	// A removal of this connection still to be redone goes first, or it would undo
	// this Add when it runs.
	if p, err := s.takeRetry(octx, retryKey{channel, connID}); err != nil {
		return Joined{}, s.fail(ctx, op, err)
	} else if p != nil {
		deps, err := s.redo(octx, p)
		if err != nil {
			s.putRetry(p)
			return Joined{}, s.fail(ctx, op, err)
		}
		s.handleDepartures(deps)
	}

	s.mu.Lock()
	name := s.name
	st := s.pch[channel]
	if st == nil {
		s.gen++
		st = &chanState{member: channel + "#" + strconv.FormatUint(s.gen, 10)}
		s.pch[channel] = st
	}
	st.n++
	sadd := !st.saved
	s.mu.Unlock()

	keys := s.channelKeys(channel)
	args := []any{connID, m.UserID, string(m.Info), maxMembers, name, s.grace.Milliseconds()}
	var reply any
	switch {
	case sadd && s.ordered:
		ev, saddErr := s.pipelineSAdd(octx, s.pchKey(name), st.member, script, keys, args)
		reply, err = ev.Result()
		if saddErr == nil {
			s.markSaved(channel, st)
		} else if err == nil {
			err = saddErr
		}
	case sadd:
		if err := s.client.SAdd(octx, s.pchKey(name), st.member).Err(); err != nil {
			s.mu.Lock()
			s.releaseLocked(channel, st) // the script was not sent: nothing to undo
			s.mu.Unlock()
			return Joined{}, s.fail(ctx, op, err)
		}
		s.markSaved(channel, st)
		fallthrough
	default:
		reply, err = script.Run(octx, s.client, keys, args...).Result()
	}
	var code int64
	var j Joined
	if err == nil {
		code, j, err = parseAddReply(reply)
	}
	if err != nil {
		// The server may have applied it: undo it later rather than leave a ghost.
		s.putRetry(&retry{channel: channel, conn: connID, user: m.UserID, own: true, st: st})
		return Joined{}, s.fail(ctx, op, err)
	}
	switch code {
	case addFull, addOwned:
		s.mu.Lock()
		s.releaseLocked(channel, st)
		s.mu.Unlock()
		if code == addFull {
			return Joined{}, fmt.Errorf("%w: %q", ErrFull, channel)
		}
	case addFirst:
		j.First = true
	}
	return j, nil
}

// parseAddReply reads addScript's code, or joinScript's code, returned flag and members.
func parseAddReply(reply any) (int64, Joined, error) {
	switch r := reply.(type) {
	case int64:
		return r, Joined{}, nil
	case []any:
		code, ok := r[0].(int64)
		if !ok {
			break
		}
		if len(r) == 1 {
			return code, Joined{}, nil // full
		}
		returned, ok := r[1].(int64)
		if !ok || len(r)%2 != 0 {
			break
		}
		j := Joined{Returned: returned == 1, Departed: returned == 2, Members: make([]Member, 0, len(r)/2-1)}
		for i := 2; i+1 < len(r); i += 2 {
			id, _ := r[i].(string)
			info, _ := r[i+1].(string)
			m := Member{UserID: id}
			if info != "" {
				m.Info = []byte(info)
			}
			j.Members = append(j.Members, m)
		}
		return code, j, nil
	}
	return 0, Joined{}, fmt.Errorf("presence: unexpected reply %T from the add script", reply)
}

// pipelineSAdd sends SADD key member and then a script in one pipeline, on a single
// server where they run in that order, and returns the SADD's error and the script's
// command. go-redis may leave the commands of a failed pipeline without an error or a
// reply, so their own results count only when Exec succeeded or failed with a Redis
// error reply (such as NOSCRIPT: then the script runs again on its own).
func (s *Redis) pipelineSAdd(ctx context.Context, key, member string, script *redis.Script, keys []string, args []any) (*redis.Cmd, error) {
	pipe := s.client.Pipeline()
	sc := pipe.SAdd(ctx, key, member)
	ev := script.EvalSha(ctx, pipe, keys, args...)
	if _, err := pipe.Exec(ctx); err != nil {
		var reply redis.Error
		if !errors.As(err, &reply) {
			failed := redis.NewCmd(ctx)
			failed.SetErr(err)
			return failed, err
		}
	}
	if redis.HasErrorPrefix(ev.Err(), "NOSCRIPT") {
		ev = script.Run(ctx, s.client, keys, args...)
	}
	return ev, sc.Err()
}

func (s *Redis) markSaved(channel string, st *chanState) {
	s.mu.Lock()
	if s.pch[channel] == st {
		st.saved = true
	}
	s.mu.Unlock()
}

// releaseLocked ends one of st's entries (s.mu held). After the last, the channel's
// member leaves the pch set at the next renewal.
func (s *Redis) releaseLocked(channel string, st *chanState) {
	if st == nil || s.pch[channel] != st {
		return // forgotten by a reset, or never counted
	}
	if st.n--; st.n > 0 {
		return
	}
	delete(s.pch, channel)
	if len(s.srem) < maxSrem {
		s.srem = append(s.srem, st.member)
	}
}

// Remove forgets connID, whichever node added it; see Store. If it fails, the retrier
// redoes it and reports the user if it was the last connection.
func (s *Redis) Remove(ctx context.Context, channel, connID, userID string) (bool, error) {
	if err := checkTag("remove", "channel", channel); err != nil {
		return false, err
	}
	octx, done, err := s.begin(ctx, "remove")
	if err != nil {
		return false, err
	}
	defer done()
	p, err := s.takeRetry(octx, retryKey{channel, connID})
	if err != nil {
		return false, s.fail(ctx, "remove", err)
	}
	queued := p != nil
	if p == nil {
		p = &retry{channel: channel, conn: connID, user: userID}
	} else if p.user != userID {
		// An Add of another user with this connection id failed and is still to be
		// undone; undo it first.
		deps, err := s.redo(octx, p)
		if err != nil {
			s.putRetry(p)
			return false, s.fail(ctx, "remove", err)
		}
		s.handleDepartures(deps)
		p, queued = &retry{channel: channel, conn: connID, user: userID}, false
	}
	code, err := s.removeOnce(octx, p, true)
	if err != nil {
		s.putRetry(p)
		return false, s.fail(ctx, "remove", err)
	}
	if code == removeAbsent && queued {
		// An earlier attempt may have removed the user's last connection unreported.
		s.handleDepartures([]Departure{{Channel: channel, UserID: userID}})
	}
	return code == removeLast, nil
}

// removeOnce runs the remove script for p and keeps the bookkeeping.
// removeOnce runs the removal; with mark, a last connection's departure is recorded as
// pending (see ConfirmDeparture).
func (s *Redis) removeOnce(ctx context.Context, p *retry, mark bool) (int64, error) {
	flag := "0" // a failed Add undone, or a retried removal: reported at once
	if mark {
		flag = "1" // a departure the caller reports: pending until ConfirmDeparture
	}
	res, err := removeScript.Run(ctx, s.client, s.channelKeys(p.channel), p.conn, p.user, flag, s.pendTTL()).Slice()
	if err != nil {
		return 0, err
	}
	if len(res) != 2 {
		return 0, fmt.Errorf("remove script: unexpected reply %v", res)
	}
	code, _ := res[0].(int64)
	owner, _ := res[1].(string)
	s.mu.Lock()
	switch {
	case p.own && s.pch[p.channel] == p.st:
		s.releaseLocked(p.channel, p.st)
	case owner != "" && owner == s.name:
		s.releaseLocked(p.channel, s.pch[p.channel])
	}
	s.mu.Unlock()
	return code, nil
}

// redo runs a removal to redo and returns the user as a departure if the channel no
// longer has it: either this removal took its last connection, or an earlier attempt
// did, or the data was lost.
func (s *Redis) redo(ctx context.Context, p *retry) ([]Departure, error) {
	code, err := s.removeOnce(ctx, p, false)
	if err != nil {
		return nil, err
	}
	if code == removeLast || code == removeAbsent {
		return []Departure{{Channel: p.channel, UserID: p.user}}, nil
	}
	return nil, nil
}

// takeRetry takes the removal to redo for k out of the queue, waiting if the retrier is
// running it.
func (s *Redis) takeRetry(ctx context.Context, k retryKey) (*retry, error) {
	for {
		s.mu.Lock()
		p := s.retries[k]
		if p == nil {
			s.mu.Unlock()
			return nil, nil
		}
		if p.running == nil {
			delete(s.retries, k)
			s.mu.Unlock()
			return p, nil
		}
		running := p.running
		s.mu.Unlock()
		select {
		case <-running:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// putRetry queues p. There is at most one entry per channel and connection; an entry
// that undoes a failed Add keeps that mark when merged.
func (s *Redis) putRetry(p *retry) {
	k := retryKey{p.channel, p.conn}
	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.retries[k]; q != nil {
		if p.own && !q.own {
			q.own, q.st = true, p.st
		}
		return
	}
	s.retries[k] = p
}

func (s *Redis) handleDepartures(deps []Departure) {
	if len(deps) > 0 {
		s.h.HandleDepartures(deps)
	}
}

// Members lists the users of channel, with the info their first connection brought.
// ConfirmDeparture settles a pending departure; see Store.
func (s *Redis) ConfirmDeparture(ctx context.Context, channel, userID string) (bool, error) {
	if err := checkTag("confirm departure", "channel", channel); err != nil {
		return false, err
	}
	octx, done, err := s.begin(ctx, "confirm departure")
	if err != nil {
		return false, err
	}
	defer done()
	keys := s.channelKeys(channel)
	n, err := confirmDepartureScript.Run(octx, s.client, []string{keys[0], keys[3]}, userID).Int64()
	if err != nil {
		return false, s.fail(ctx, "confirm departure", err)
	}
	return n == 1, nil
}

// ConfirmVacated settles a pending vacancy; see Store.
func (s *Redis) ConfirmVacated(ctx context.Context, app, channel string) (bool, error) {
	if err := checkTag("confirm vacated", "app", app); err != nil {
		return false, err
	}
	octx, done, err := s.begin(ctx, "confirm vacated")
	if err != nil {
		return false, err
	}
	defer done()
	keys := s.appKeys(app, "")
	n, err := confirmVacatedScript.Run(octx, s.client, []string{keys[0], keys[2]}, channel).Int64()
	if err != nil {
		return false, s.fail(ctx, "confirm vacated", err)
	}
	return n == 1, nil
}

func (s *Redis) Members(ctx context.Context, channel string) ([]Member, error) {
	if err := checkTag("members", "channel", channel); err != nil {
		return nil, err
	}
	octx, done, err := s.begin(ctx, "members")
	if err != nil {
		return nil, err
	}
	defer done()
	all, err := s.client.HGetAll(octx, s.channelKeys(channel)[0]).Result()
	if err != nil {
		return nil, s.fail(ctx, "members", err)
	}
	out := make([]Member, 0, len(all))
	for id, info := range all {
		m := Member{UserID: id}
		if info != "" {
			m.Info = []byte(info)
		}
		out = append(out, m)
	}
	return out, nil
}

// Count is HLEN of the channel's users hash: O(1).
func (s *Redis) Count(ctx context.Context, channel string) (int, error) {
	if err := checkTag("count", "channel", channel); err != nil {
		return 0, err
	}
	octx, done, err := s.begin(ctx, "count")
	if err != nil {
		return 0, err
	}
	defer done()
	n, err := s.client.HLen(octx, s.channelKeys(channel)[0]).Result()
	if err != nil {
		return 0, s.fail(ctx, "count", err)
	}
	return int(n), nil
}

// setSubsChunk bounds the channels of one script call, so that a full re-report of a
// big node does not stall Redis in one script. Each channel's transition still has
// exactly one reporter: a call is atomic for each channel it names.
const setSubsChunk = 512

// SetSubscriptions records this node's counts; see Store. A call that fails may or may
// not have been applied: report again (absolute numbers make that harmless).
func (s *Redis) SetSubscriptions(ctx context.Context, app string, counts []ChannelCount) (Report, error) {
	if err := checkTag("set subscriptions", "app", app); err != nil {
		return Report{}, err
	}
	for _, c := range counts {
		if c.Count < 0 {
			return Report{}, fmt.Errorf("presence: set subscriptions: negative count %d for %q", c.Count, c.Channel)
		}
	}
	octx, done, err := s.begin(ctx, "set subscriptions")
	if err != nil {
		return Report{}, err
	}
	defer done()
	if len(counts) == 0 {
		return Report{}, nil
	}
	s.mu.Lock()
	name, epoch := s.name, s.epoch
	known := s.apps[app]
	s.mu.Unlock()
	keys := s.appKeys(app, name)

	var out Report
	for start := 0; start < len(counts); start += setSubsChunk {
		chunk := counts[start:min(start+setSubsChunk, len(counts))]
		args := make([]any, 0, 2+2*len(chunk))
		args = append(args, s.grace.Milliseconds(), s.pendTTL())
		for _, c := range chunk {
			args = append(args, c.Channel, c.Count)
		}
		var res []any
		switch {
		case !known && s.ordered:
			ev, saddErr := s.pipelineSAdd(octx, s.appsKey(name), app, setSubsScript, keys, args)
			if res, err = ev.Slice(); err == nil {
				err = saddErr
			}
		case !known:
			if err = s.client.SAdd(octx, s.appsKey(name), app).Err(); err == nil {
				res, err = setSubsScript.Run(octx, s.client, keys, args...).Slice()
			}
		default:
			res, err = setSubsScript.Run(octx, s.client, keys, args...).Slice()
		}
		if err != nil {
			return out, s.fail(ctx, "set subscriptions", err)
		}
		if !known {
			known = true
			s.mu.Lock()
			if s.epoch == epoch {
				s.apps[app] = true
			}
			s.mu.Unlock()
		}
		out = appendReport(out, app, res)
	}
	return out, nil
}

// appendTransitions decodes the channel, 1|0 pairs of setSubsScript.
// appendReport reads setSubsScript's channel, kind, total triples (kind 1 occupied, 2
// occupied within the grace of its vacancy, 3 occupied past the grace of a vacancy that
// stood, 0 vacated, -1 no transition).
func appendReport(out Report, app string, res []any) Report {
	for i := 0; i+2 < len(res); i += 3 {
		ch, _ := res[i].(string)
		kind, _ := res[i+1].(int64)
		total, _ := res[i+2].(int64)
		if kind >= 0 {
			out.Transitions = append(out.Transitions, Transition{App: app, Channel: ch, Occupied: kind > 0, Returned: kind == 2, Vacated: kind == 3})
		}
		out.Counts = append(out.Counts, ChannelCount{Channel: ch, Count: int(total)})
	}
	return out
}

// Subscriptions is the cluster-wide count of channel in app: one HGET.
func (s *Redis) Subscriptions(ctx context.Context, app, channel string) (int, error) {
	if err := checkTag("subscriptions", "app", app); err != nil {
		return 0, err
	}
	octx, done, err := s.begin(ctx, "subscriptions")
	if err != nil {
		return 0, err
	}
	defer done()
	n, err := s.client.HGet(octx, s.appKeys(app, "")[0], channel).Int()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, s.fail(ctx, "subscriptions", err)
	}
	return n, nil
}

// Channels scans app's totals for names starting with prefix.
func (s *Redis) Channels(ctx context.Context, app, prefix string) ([]ChannelCount, error) {
	if err := checkTag("channels", "app", app); err != nil {
		return nil, err
	}
	octx, done, err := s.begin(ctx, "channels")
	if err != nil {
		return nil, err
	}
	defer done()
	key := s.appKeys(app, "")[0]
	match := globEscape(prefix) + "*"
	var out []ChannelCount
	var seen map[string]bool // HSCAN may return a field twice across pages
	var cursor uint64
	for pages := 0; ; pages++ {
		kv, next, err := s.client.HScan(octx, key, cursor, match, 1000).Result()
		if err != nil {
			return nil, s.fail(ctx, "channels", err)
		}
		if pages == 0 && next != 0 {
			seen = make(map[string]bool)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			n, err := strconv.Atoi(kv[i+1])
			if err != nil || n <= 0 || seen[kv[i]] {
				continue
			}
			if seen != nil {
				seen[kv[i]] = true
			}
			out = append(out, ChannelCount{Channel: kv[i], Count: n})
		}
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
}

// globEscape quotes the characters that Redis's MATCH patterns give a meaning.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Nodes lists the live nodes as the last renewal saw them (every Lease/3); nil after
// Close.
func (s *Redis) Nodes() []Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	return append([]Node(nil), s.nodes...)
}

// Close stops the node's loops and gives up its lease, so that the next sweep (by any
// node, within a second) removes what the node left and reports the departures. Calls
// under way finish first. Removals still queued for a retry are left to that sweep.
func (s *Redis) Close(ctx context.Context) error {
	if err := s.shutdown(ctx); err != nil {
		return err
	}
	name := s.Name()
	octx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	if err := s.client.ZAddXX(octx, s.keyNodes, redis.Z{Score: 0, Member: name}).Err(); err != nil {
		if cerr := callerDone(ctx); cerr != nil {
			return fmt.Errorf("presence: close: %w", cerr)
		}
		return fmt.Errorf("presence: close: give up lease of %s: %w: %v", name, ErrUnavailable, err)
	}
	return nil
}

// shutdown refuses new calls, stops the loops and waits for them and for the calls under
// way, at most until ctx ends. It does not touch the lease: on its own it is a kill -9.
func (s *Redis) shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	if s.inflight == 0 {
		close(s.idle)
	}
	s.mu.Unlock()
	defer s.warn.Close() // logs the warnings still held back
	close(s.stop)
	s.cancelBase()
	for _, ch := range []chan struct{}{s.renewDone, s.sweepDone, s.retryDone, s.idle} {
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("presence: close: %w", ctx.Err())
		}
	}
	return nil
}
