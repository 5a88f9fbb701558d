package pubsub

// ChannelStates counts the channel states the engine holds, control and probe channels
// included, and its shards: a test of Unsubscribe's cleanup checks that nothing leaks.
func (r *Redis) ChannelStates() (states, shards int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	topo := r.topo.Load()
	for _, s := range topo.shards {
		states += len(s.chans)
	}
	return states, len(topo.shards)
}

// BadMessages counts the replies from Redis the engine skipped as unexpected.
func (r *Redis) BadMessages() uint64 { return r.badMessages.Load() }

// KeySlot is the engine's Redis Cluster slot function.
func KeySlot(name string) int { return keySlot(name) }
