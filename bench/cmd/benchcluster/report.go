package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// report is everything benchcluster prints.
type report struct {
	Command string    `json:"command"`
	NProc   int       `json:"nproc"`
	Nodes   int       `json:"nodes"`
	Results []*result `json:"results"`
	Elapsed string    `json:"elapsed"`
	// Load is the host's 1-minute load average at the start and at the end.
	Load [2]float64 `json:"loadavg"`
}

func (r *report) print(w io.Writer, o options) {
	fmt.Fprintf(w, "\nHerald cluster figures: %d nodes joined through one redis-server, loadgen spreading its connections over the nodes, publishing through node 1\n", r.Nodes)
	fmt.Fprintf(w, "command: %s\n", r.Command)
	fmt.Fprintf(w, "machine: nproc=%d; everything (redis-server, nodes, loadgen) on this host, on loopback; run took %s; load average %.2f at the start, %.2f at the end\n",
		r.NProc, r.Elapsed, r.Load[0], r.Load[1])
	for _, res := range r.Results {
		fmt.Fprintln(w)
		switch res.Scenario {
		case scThroughput:
			fmt.Fprintf(w, "throughput: %d channels, %d connections (one channel each, spread over the nodes), %d-event batches, %d requests in flight, --publish-rate max\n",
				res.Channels, res.Connections, o.batch, o.concurrency)
		case scPresence:
			fmt.Fprintf(w, "presence storm: %d connections on %d presence channels, %.0f closed and reopened per second\n", res.Connections, res.Channels, o.presChurn)
		case scWebhooks:
			fmt.Fprintf(w, "webhooks: presence storm of %d connections on %d presence channels, %.0f closed and reopened per second (each a new user), every node's webhooks (all types) to one receiver\n",
				res.Connections, res.Channels, o.hookChurn)
		}
		fmt.Fprintf(w, "  loadgen: %s\n  report: %s\n", res.Command, res.Report)
		if res.Error != "" {
			fmt.Fprintf(w, "  ERROR: %s\n", firstLines(res.Error, 6))
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		p := func(format string, a ...any) { fmt.Fprintf(tw, format+"\n", a...) }
		p("  connections established per node\t%s", joinUints(res.NodeConns))
		switch res.Scenario {
		case scThroughput:
			p("  events published (API, whole run)\t%s /s\t%s events", thousands(res.PublishesPerSec), thousands(float64(res.Published)))
			p("  deliveries (loadgen, load phase and drain)\t%s /s\t%s of %s expected, missing %d, duplicated %d", thousands(res.DeliveriesPerSec),
				thousands(float64(res.Delivered)), thousands(float64(res.Expected)), res.Missing, res.Duplicated)
			p("  publish→receive latency\tp50 %.2f ms\tp99 %.2f ms, max %.2f ms", res.LatencyP50, res.LatencyP99, res.LatencyMax)
			p("  over the load phase (%.1f s):\t", res.WindowSeconds)
			p("  broker messages published by the nodes\t%s /s\tinto Redis (one per event)", thousands(res.BrokerPublishedPerSec))
			p("  broker messages received by the nodes\t%s /s\tout of Redis (one per event per node with subscribers)", thousands(res.BrokerReceivedPerSec))
			p("  PUBLISH commands at Redis\t%s /s\tprobes and control messages included", thousands(res.RedisPublishPerSec))
			p("  deliveries written by the nodes\t%s /s\therald_messages_sent_total", thousands(res.NodeDeliveriesPerSec))
			p("  redis-server CPU\t%.0f%% of a core\t%.2f µs per message published, %.2f µs per delivery", res.RedisCPUPercent, res.RedisCPUPerMessage, res.RedisCPUPerDelivery)
			p("  nodes' CPU, summed\t%.0f%% of a core\t%.2f µs per delivery", res.NodesCPUPercent, res.NodesCPUPerDelivery)
		case scPresence:
			p("  joins\t%s /s\t%s over the load phase", thousands(res.JoinsPerSec), thousands(float64(res.Joins)))
			p("  leaves\t%s /s\t%s", thousands(res.LeavesPerSec), thousands(float64(res.Leaves)))
			p("  join→member_added, seen by the other members\tp50 %.2f ms\tp99 %.2f ms, max %.2f ms (load phase)", res.MemberP50, res.MemberP99, res.MemberMax)
			p("    whole run, the ramp's burst of joins included\tp50 %.2f ms\tp99 %.2f ms", res.MemberWholeP50, res.MemberWholeP99)
			p("  member_added / member_removed received\t%s / %s\t", thousands(float64(res.MemberAdded)), thousands(float64(res.MemberRemoved)))
			p("  over the load phase (%.1f s):\t", res.WindowSeconds)
			p("  Redis commands\t%s /s\t", thousands(res.RedisCommandsPerSec))
			p("  broker messages published / received by the nodes\t%s / %s /s\t", thousands(res.BrokerPublishedPerSec), thousands(res.BrokerReceivedPerSec))
			p("  redis-server CPU\t%.0f%% of a core\t%.2f µs per join or leave", res.RedisCPUPercent, res.RedisCPUPerChange)
			p("  nodes' CPU, summed\t%.0f%% of a core\t", res.NodesCPUPercent)
			p("  presence channels occupied after every client left\t%d\tasked of the last node, %.1f s after loadgen ended", res.OccupiedAfter, res.EmptySeconds)
			p("  missing\t-\tthe presence storm publishes nothing: member events have no exact expected count under churn")
		case scWebhooks:
			wh := res.Webhooks
			rc := wh.Received
			p("  joins / leaves\t%s / %s /s\t%s / %s over the load phase", thousands(res.JoinsPerSec), thousands(res.LeavesPerSec),
				thousands(float64(res.Joins)), thousands(float64(res.Leaves)))
			p("  over the load phase (%.1f s):\t", res.WindowSeconds)
			p("  webhook events received\t%s /s\tthe nodes counted %s /s sent", thousands(wh.EventsPerSec), thousands(wh.SentPerSec))
			p("  webhook requests received\t%s /s\t%.1f events per request", thousands(wh.RequestsPerSec), wh.EventsPerRequest)
			p("  redis-server CPU\t%.0f%% of a core\t%.2f µs per join or leave", res.RedisCPUPercent, res.RedisCPUPerChange)
			p("  nodes' CPU, summed\t%.0f%% of a core\t", res.NodesCPUPercent)
			p("  whole run, once settled (%.1f s after every client left):\t", wh.SettleSeconds)
			p("  events received / sent by the nodes\t%s / %s\tin %s requests", thousands(float64(rc.Events)), thousands(wh.SentAll), thousands(float64(rc.Requests)))
			p("  member_added / member_removed\t%s / %s\t%s (channel, user) pairs, %d without exactly one of each; loadgen saw %s subscriptions succeed",
				thousands(float64(rc.ByType["member_added"])), thousands(float64(rc.ByType["member_removed"])),
				thousands(float64(wh.MemberPairs)), wh.MembersUnmatched, thousands(float64(wh.Subscribed)))
			p("  channel_occupied / channel_vacated\t%s / %s\t%s channels, %d unbalanced, %d events out of turn (besides %d pairs from two nodes that crossed in flight, at most %.0f ms apart, %d of them put right by time_ms)",
				thousands(float64(rc.ByType["channel_occupied"])), thousands(float64(rc.ByType["channel_vacated"])),
				thousands(float64(wh.ChannelsSeen)), wh.ChannelsUnbalanced, wh.ChannelOutOfTurn, wh.ChannelCrossings, wh.CrossingWidestMs, wh.CrossingsByTimeMS)
			if other := rc.Events - rc.ByType["member_added"] - rc.ByType["member_removed"] - rc.ByType["channel_occupied"] - rc.ByType["channel_vacated"]; other > 0 {
				p("  other event types\t%s\t%v", thousands(float64(other)), rc.ByType)
			}
			p("  event → 2xx (herald_webhook_latency_seconds)\tp50 %.1f ms\tp99 %.1f ms, mean %.1f ms, every event within %.0f ms (vacated and removed are dated when settled, after the 3 s grace)",
				wh.LatencyP50Ms, wh.LatencyP99Ms, wh.LatencyMeanMs, wh.AllWithinMs)
			p("    the %s events within 2.5 s\tp50 %.1f ms\tp99 %.1f ms (%s of the %s were vacated or removed, sent after the grace)",
				thousands(float64(wh.FastCount)), wh.FastP50Ms, wh.FastP99Ms, thousands(float64(wh.HeldCount)), thousands(float64(rc.Events)))
			if slow := wh.LatencyCount - wh.FastCount; slow > 0 {
				p("    the %s over 2.5 s\tmean %.0f to %.0f ms\tfrom the histogram's sum", thousands(float64(slow)), wh.SlowMeanMs[0], wh.SlowMeanMs[1])
			}
			p("  request time_ms → receipt\tp50 %.2f ms\tp99 %.2f ms, max %.2f ms", wh.DelayP50Ms, wh.DelayP99Ms, wh.DelayMaxMs)
			p("  signatures\t%s valid\t%d bad signature, %d bad key, %d bad body", thousands(float64(rc.Requests)), rc.BadSignature, rc.BadKey, rc.BadBody)
			p("  webhooks failed / dropped at the nodes\t%.0f / %.0f\t", wh.Failed, wh.Dropped)
		}
		if len(res.Errors) > 0 {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(res.Errors)) {
				parts = append(parts, fmt.Sprintf("%s=%d", k, res.Errors[k]))
			}
			p("  loadgen errors\t%s", strings.Join(parts, " "))
		}
		if len(res.RedisCommands) > 0 {
			names := slices.SortedFunc(maps.Keys(res.RedisCommands), func(a, b string) int {
				return cmp.Compare(res.RedisCommands[b], res.RedisCommands[a])
			})
			var parts []string
			for _, k := range names[:min(len(names), 6)] {
				parts = append(parts, fmt.Sprintf("%s %s", k, thousands(res.RedisCommands[k])))
			}
			p("  Redis commands per second, busiest\t%s\t", strings.Join(parts, ", "))
		}
		p("  dropped or failed at the nodes\t%.0f\t", res.Dropped)
		if len(res.Failed) == 0 {
			p("  checks\tok\t")
		} else {
			for _, f := range res.Failed {
				p("  CHECK FAILED\t%s\t", f)
			}
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "JSON %s\n", marshalLine(r))
}

func thousands(f float64) string {
	if f < 100 {
		return fmt.Sprintf("%.1f", f)
	}
	s := fmt.Sprint(int64(f + 0.5))
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func joinUints(v []uint64) string {
	if len(v) == 0 {
		return "-"
	}
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = thousands(float64(x))
	}
	return strings.Join(parts, " / ")
}

func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, "\n    ")
}
