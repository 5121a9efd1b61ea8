package shard

import (
	"sync"
	"sync/atomic"
	"testing"
)

type node struct {
	producer, seq int
	link          atomic.Pointer[node]
}

func (n *node) Link() *atomic.Pointer[node] { return &n.link }

func TestStackOrder(t *testing.T) {
	var s Stack[node, *node]
	if !s.Empty() || len(s.TakeAll(nil)) != 0 {
		t.Fatal("new stack not empty")
	}
	for i := 0; i < 5; i++ {
		s.Push(&node{seq: i})
	}
	got := s.TakeAll(nil)
	for i, n := range got {
		if n.seq != i || n.link.Load() != nil {
			t.Fatalf("TakeAll[%d] = seq %d (link %p), want seq %d, no link", i, n.seq, n.link.Load(), i)
		}
	}
	if !s.Empty() {
		t.Fatal("stack not empty after TakeAll")
	}
}

// TestStackConcurrent: many producers push while one consumer takes; every
// node arrives once, and each producer's nodes arrive in its push order.
// Nodes are recycled to exercise reuse (which a popping Treiber stack would
// get wrong through ABA).
func TestStackConcurrent(t *testing.T) {
	const producers = 16
	per := 20000
	if testing.Short() {
		per = 2000
	}
	var s Stack[node, *node]
	free := make(chan *node, producers*4)
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				var n *node
				select {
				case n = <-free:
				default:
					n = new(node)
				}
				n.producer, n.seq = p, i
				s.Push(n)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	next := make([]int, producers)
	total := 0
	var buf []*node
	for finished := false; ; {
		select {
		case <-done:
			finished = true
		default:
		}
		buf = s.TakeAll(buf[:0])
		for _, n := range buf {
			if n.seq != next[n.producer] {
				t.Fatalf("producer %d: got seq %d, want %d", n.producer, n.seq, next[n.producer])
			}
			next[n.producer]++
			total++
			select {
			case free <- n:
			default:
			}
		}
		if finished && s.Empty() {
			break
		}
	}
	if total != producers*per {
		t.Fatalf("took %d nodes, pushed %d", total, producers*per)
	}
}

func BenchmarkPush(b *testing.B) {
	var s Stack[node, *node]
	nodes := make([]node, 1024)
	var buf []*node
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		s.Push(&nodes[i%len(nodes)])
		if i%len(nodes) == len(nodes)-1 {
			buf = s.TakeAll(buf[:0])
		}
	}
}
