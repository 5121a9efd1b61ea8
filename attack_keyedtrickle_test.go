package vinequeue_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	vq "github.com/vineroute/vinequeue"
)

type trickleSink struct {
	mu   sync.Mutex
	at   map[string]time.Time
	wait map[string]chan struct{}
}

func newTrickleSink() *trickleSink {
	return &trickleSink{at: map[string]time.Time{}, wait: map[string]chan struct{}{}}
}

func (s *trickleSink) send(_ context.Context, b [][]byte) error {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range b {
		k := string(v)
		if _, ok := s.at[k]; !ok {
			s.at[k] = now
		}
		if ch, ok := s.wait[k]; ok {
			close(ch)
			delete(s.wait, k)
		}
	}
	return nil
}

func (s *trickleSink) await(k string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	if _, ok := s.at[k]; ok {
		close(ch)
		return ch
	}
	s.wait[k] = ch
	return ch
}

func TestAttackKeyedTrickleExplore(t *testing.T) {
	const fi = 20 * time.Millisecond
	for _, mode := range []vq.WALMode{0, vq.Periodic, vq.Sync} {
		for _, coll := range []int{1, 4} {
			t.Run(fmt.Sprintf("%v/c%d", mode, coll), func(t *testing.T) {
				s := newTrickleSink()
				cfg := vq.Config[[]byte]{Send: s.send, BatchSize: 1000, Workers: 2, Collectors: coll, FlushInterval: fi}
				if mode != 0 {
					cfg.WAL = vq.WALConfig{Dir: t.TempDir(), Mode: mode, SyncInterval: 5 * time.Millisecond}
				}
				q, err := vq.New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer q.Close()
				var worst time.Duration
				for i := range 60 {
					k := fmt.Sprintf("i%d", i)
					ch := s.await(k)
					start := time.Now()
					if err := q.EnqueueKey(uint64(i%3), []byte(k)); err != nil {
						t.Fatal(err)
					}
					select {
					case <-ch:
					case <-time.After(50 * fi):
						t.Fatalf("item %d not delivered within %v", i, 50*fi)
					}
					worst = max(worst, time.Since(start))
				}
				t.Logf("worst %v", worst)
			})
		}
	}
}
