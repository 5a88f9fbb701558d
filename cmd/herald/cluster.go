package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-rt/herald/hub"
	"github.com/herald-rt/herald/presence"
	"github.com/herald-rt/herald/pubsub"
)

// redisStartTimeout bounds how long a node waits for its Redis at start: a node that
// cannot reach Redis refuses to start, so that it is not taken for a working member of
// the cluster.
const redisStartTimeout = 15 * time.Second

// minNodeLease keeps --node-lease above what renewing it every third of it can sustain.
const minNodeLease = time.Second

// clusterMode describes the cluster set-up for the start-up line.
func (o *options) clusterMode() string {
	switch {
	case o.redisURL != "":
		return "cluster through redis " + redactURL(o.redisURL)
	case o.redisCluster != "":
		return "cluster through redis-cluster " + redactURL(o.redisCluster)
	}
	return "single node (in-memory broker)"
}

// redactURL hides a password in a Redis URL for logs.
func redactURL(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	userinfo, host, ok := strings.Cut(rest, "@")
	if !ok {
		return s
	}
	if user, _, hasPass := strings.Cut(userinfo, ":"); hasPass {
		return scheme + "://" + user + ":***@" + host
	}
	return s
}

// redisClient builds the go-redis client for --redis or --redis-cluster, or returns nil
// for a single node.
func (o *options) redisClient() (redis.UniversalClient, error) {
	switch {
	case o.redisURL != "" && o.redisCluster != "":
		return nil, errors.New("--redis and --redis-cluster are exclusive: give the one your Redis is")
	case o.nodeLease < minNodeLease:
		return nil, fmt.Errorf("--node-lease %v is too short: at least %v", o.nodeLease, minNodeLease)
	case o.redisURL != "":
		opt, err := redis.ParseURL(o.redisURL)
		if err != nil {
			return nil, fmt.Errorf("--redis: %w (want redis://[user:password@]host:port[/db] or rediss://…)", err)
		}
		tuneRedis(&opt.ContextTimeoutEnabled, &opt.MaxRetries, &opt.DialTimeout, &opt.ReadTimeout, &opt.WriteTimeout)
		return redis.NewClient(opt), nil
	case o.redisCluster != "":
		opt := &redis.ClusterOptions{}
		if strings.Contains(o.redisCluster, "://") {
			var err error
			if opt, err = redis.ParseClusterURL(o.redisCluster); err != nil {
				return nil, fmt.Errorf("--redis-cluster: %w (want host:port[,host:port…] or redis://[user:password@]host:port?addr=host:port…)", err)
			}
		} else {
			for _, a := range strings.Split(o.redisCluster, ",") {
				if a = strings.TrimSpace(a); a != "" {
					opt.Addrs = append(opt.Addrs, a)
				}
			}
		}
		if len(opt.Addrs) == 0 {
			return nil, errors.New("--redis-cluster: no address")
		}
		tuneRedis(&opt.ContextTimeoutEnabled, &opt.MaxRetries, &opt.DialTimeout, &opt.ReadTimeout, &opt.WriteTimeout)
		return redis.NewClusterClient(opt), nil
	}
	return nil, nil
}

// tuneRedis sets what the engines rely on: calls end with their context (a frozen Redis
// must not hold a publish past its deadline), and go-redis never retries a command by
// itself (a retried PUBLISH could deliver twice; the engines retry what is safe to).
func tuneRedis(ctxTimeout *bool, maxRetries *int, dial, read, write *time.Duration) {
	*ctxTimeout = true
	*maxRetries = -1
	if *dial == 0 {
		*dial = 2 * time.Second
	}
	if *read == 0 {
		*read = 2 * time.Second
	}
	if *write == 0 {
		*write = 2 * time.Second
	}
}

// redisLogger sends go-redis's own log lines (a failed dial, twice a second while Redis
// is down) to the node's logger at debug level: the engines report outages themselves,
// once, and go-redis would otherwise write to stderr past the log format and level.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	if l.log.Enabled(ctx, slog.LevelDebug) {
		l.log.Debug("go-redis: " + fmt.Sprintf(format, v...))
	}
}

// useRedis makes the hub build its presence store and broker on rc.
func (o *options) useRedis(cfg *hub.Config, rc redis.UniversalClient, log *slog.Logger) {
	redis.SetLogger(redisLogger{log})
	cfg.NewPresence = func(id uint32, h presence.Handler) (presence.Store, error) {
		ctx, cancel := context.WithTimeout(context.Background(), redisStartTimeout)
		defer cancel()
		s, err := presence.NewRedis(ctx, presence.RedisConfig{
			Client: rc, Prefix: o.redisPrefix, NodeID: id, Lease: o.nodeLease, Logger: log,
		}, h)
		switch {
		case errors.Is(err, presence.ErrNodeIDInUse):
			return nil, err
		case err != nil:
			return nil, fmt.Errorf("redis is not usable: %w", err)
		}
		return s, nil
	}
	cfg.NewBroker = func(id uint32, h pubsub.Handler) (pubsub.Broker, error) {
		ctx, cancel := context.WithTimeout(context.Background(), redisStartTimeout)
		defer cancel()
		b, err := pubsub.NewRedis(ctx, pubsub.RedisConfig{
			Client: rc, Prefix: o.redisPrefix, Node: fmt.Sprintf("%d-%d", id, time.Now().UnixMicro()), Logger: log,
		}, h)
		if err != nil {
			return nil, fmt.Errorf("redis pub/sub is not usable: %w", err)
		}
		return b, nil
	}
}
