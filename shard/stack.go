package shard

import "sync/atomic"

// Linked is the constraint on node types: a pointer type whose Link method
// returns the node's own list link.
type Linked[N any] interface {
	*N
	Link() *atomic.Pointer[N]
}

// Stack is a lock-free MPSC list of nodes. The zero value is empty and ready.
type Stack[N any, P Linked[N]] struct {
	head atomic.Pointer[N]
	_    [120]byte // the head is the one contended word: keep it alone
}

// Push publishes n. Any goroutine; n must not be in a list.
func (s *Stack[N, P]) Push(n P) {
	link := n.Link()
	for {
		old := s.head.Load()
		link.Store(old)
		if s.head.CompareAndSwap(old, (*N)(n)) {
			return
		}
	}
}

// Empty reports whether the stack has no node (a snapshot).
func (s *Stack[N, P]) Empty() bool { return s.head.Load() == nil }

// TakeAll detaches every node and returns them oldest first, as a slice
// appended to dst (so the caller can reuse its backing array). One consumer.
func (s *Stack[N, P]) TakeAll(dst []P) []P {
	n := s.head.Swap(nil)
	start := len(dst)
	for n != nil {
		p := P(n)
		dst = append(dst, p)
		link := p.Link()
		n = link.Load()
		link.Store(nil)
	}
	// The list is newest first: reverse the part we appended.
	for i, j := start, len(dst)-1; i < j; i, j = i+1, j-1 {
		dst[i], dst[j] = dst[j], dst[i]
	}
	return dst
}
