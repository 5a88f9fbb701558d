package presence

import (
	"context"
)

// PresenceChannels is the number of presence channels m holds state for, so that tests can see that
// emptied channels are deleted.
func (m *Memory) PresenceChannels() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.channels)
}

// Kill stops s as kill -9 would stop its process: its loops stop and it refuses calls,
// but its lease stays until it runs out.
func (s *Redis) Kill() { _ = s.shutdown(context.Background()) }

// PauseLoops makes s's renewals, sweeps and retries skip their turns, as if the process
// were frozen (SIGSTOP, a long GC pause) or cut off from Redis; ResumeLoops ends that.
func (s *Redis) PauseLoops()  { s.paused.Store(true) }
func (s *Redis) ResumeLoops() { s.paused.Store(false) }

// OnClaim has f called by s's sweeper with the names it claimed, before it cleans them.
func (s *Redis) OnClaim(f func(names []string)) { s.claimHook.Store(&f) }

// QueuedRetries is the number of removals waiting for a retry.
func (s *Redis) QueuedRetries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.retries)
}

// ClaimLostReply runs s's claim script as its sweeper would, and drops the reply, as a
// call that timed out while Redis was frozen and ran when Redis woke up: s holds the
// claims without knowing.
func (s *Redis) ClaimLostReply() error {
	return claimScript.Run(context.Background(), s.client, []string{s.keyNodes, s.keyClaims, s.keyClaimers},
		s.Name(), claimTTL.Milliseconds(), claimLimit, s.id).Err()
}
