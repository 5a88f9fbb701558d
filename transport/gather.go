package transport

// Gathering (nats-server's flushClients idea): the Fanout jobs of one mailbox batch
// do not write to their connections one frame at a time. Each frame a job hands to
// a connection with nothing queued is noted (a reference to the shared frame, never a
// copy), and at the end of the batch each connection gets all of its frames in one
// writev, or one write when it got one frame (the idle path, as cheap as before).
// When a publisher outruns a loop, its mailbox holds several jobs by the time the
// loop wakes, and a connection's frames leave in one syscall and, on loopback or a
// fast link, one TCP segment: the cost per delivery falls as the load rises.
//
// Order: a connection's gathered frames leave before anything else is written to it
// (send and beginClose flush them first), and the frames of one connection are kept
// in job order, so per-connection order is what it would be without gathering, across
// channels too. A connection with output already queued is not gathered: its frames
// join its queue at once, as before, and its MaxPendingBytes check runs per frame.
// For the others the check runs when the gathered frames are written: what the
// kernel did not take is queued, and past MaxPendingBytes it is a slow consumer. The
// bound means the same thing either way: bytes handed to the connection that the
// kernel has not taken.
//
// Memory: the notes are 8 bytes per (connection, frame) pair and 24 per connection,
// in loop-owned slices reused from batch to batch; a batch that reaches gatherMax
// pairs is flushed at once and goes on, so the notes never pass gatherMax pairs.

const gatherMax = 1 << 16 // (connection, frame) pairs noted before a flush

// gatherConn is one connection's frames in this batch: a list through gpairs.
type gatherConn struct {
	c          *Conn // nil once flushed early (send, beginClose)
	head, tail int32 // first and last pair
}

// gatherPair is one frame for one connection.
type gatherPair struct {
	frame int32 // index in loop.gframes
	next  int32 // next pair of the same connection, -1 for none
}

// gather notes frames[fi] for c, which has nothing queued (owner loop, in a batch).
func (l *loop) gather(c *Conn, fi int32) {
	p := int32(len(l.gpairs))
	l.gpairs = append(l.gpairs, gatherPair{frame: fi, next: -1})
	bump(&l.st.framesOut, 1)
	if c.flags&fGathered == 0 {
		c.flags |= fGathered
		l.slab[c.slot].gat = uint32(len(l.gconns))
		l.gconns = append(l.gconns, gatherConn{c: c, head: p, tail: p})
		return
	}
	g := &l.gconns[l.slab[c.slot].gat]
	l.gpairs[g.tail].next = p
	g.tail = p
}

// flushGathered writes c's gathered frames now, ahead of something else for c.
func (l *loop) flushGathered(c *Conn) {
	c.flags &^= fGathered
	g := &l.gconns[l.slab[c.slot].gat]
	head := g.head
	g.c = nil
	l.writeGathered(c, head)
}

// flushGather writes every connection's gathered frames and forgets them: the end of
// a mailbox batch, or gatherMax pairs noted.
func (l *loop) flushGather() {
	used := len(l.gpairs)
	for i := range l.gconns {
		g := &l.gconns[i]
		if c := g.c; c != nil {
			c.flags &^= fGathered
			if c.state == stOpen {
				l.writeGathered(c, g.head)
			}
		}
		*g = gatherConn{}
	}
	l.gconns = l.gconns[:0]
	l.gpairs = l.gpairs[:0]
	clear(l.gframes)
	l.gframes = l.gframes[:0]
	if cap(l.gpairs) > 4096 && used < cap(l.gpairs)/8 {
		// A burst grew the notes; a long quiet spell (1024 batches) gives them back.
		if l.gatherQuiet++; l.gatherQuiet >= 1024 {
			l.gpairs, l.gconns, l.gframes, l.gatherQuiet = nil, nil, nil, 0
		}
	} else {
		l.gatherQuiet = 0
	}
	l.fanoutDone()
}

// writeGathered writes the frames of c from pair p on: one write for one frame (the
// idle path), else one writev per IOV_MAX frames while the kernel takes all; what it
// does not take is queued (references, no copy) behind the rest of a partly written
// frame, and EPOLLOUT is armed, as send does.
func (l *loop) writeGathered(c *Conn, p int32) {
	if l.gpairs[p].next < 0 {
		l.put(c, l.gframes[l.gpairs[p].frame], false)
		return
	}
	for p >= 0 {
		iov := l.iov[:0]
		total, q := 0, p
		for ; q >= 0 && len(iov) < maxIovecs; q = l.gpairs[q].next {
			f := l.gframes[l.gpairs[q].frame]
			iov = append(iov, iovec(f))
			total += len(f)
		}
		taken, ok := l.writev(c, iov)
		l.iov = iov[:0]
		if !ok {
			l.finish(c, CloseConnLost)
			return
		}
		if taken == total {
			p = q
			continue
		}
		x := c.extOrNew()
		for ; p >= 0; p = l.gpairs[p].next {
			f := l.gframes[l.gpairs[p].frame]
			if taken >= len(f) {
				taken -= len(f)
				continue
			}
			if taken > 0 {
				f = f[taken:]
				x.headRest = true // c's queue was empty: this is its head
				taken = 0
			}
			x.out = append(x.out, f)
			x.outBytes += len(f)
		}
		if x.outBytes > l.cfg.MaxPendingBytes {
			l.cutSlow(c)
			return
		}
		l.armOut(c)
		return
	}
}
