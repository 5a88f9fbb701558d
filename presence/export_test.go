package presence

// Channels is the number of channels m holds state for, so that tests can see that
// emptied channels are deleted.
func (m *Memory) Channels() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.channels)
}
