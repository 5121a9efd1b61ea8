package vinequeue_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	vq "github.com/vineroute/vinequeue"
)

// A keyed item waits for a partial batch only until its shard has held it
// over a tick (two ticks, one FlushInterval, at most), once its shard has
// no batch in flight. These tests hold the queue to that at a trickle,
// where no batch ever fills, with a bound far above it (trickleBound): an
// item left waiting for a tick that never cuts it fails them, however
// loaded the machine.

const (
	trickleInterval = 20 * time.Millisecond
	trickleBound    = 50 * trickleInterval
)

// trickleSink delivers items, noting when each arrived, and lets a test
// wait for one; items a test holds wait in Send until it lets them go.
type trickleSink struct {
	mu      sync.Mutex
	at      map[string]time.Time
	wait    map[string]chan struct{}
	holds   map[string]chan struct{}
	entered map[string]chan struct{}
	fail    map[string]bool // fails for good, once
}

func newTrickleSink() *trickleSink {
	return &trickleSink{at: map[string]time.Time{}, wait: map[string]chan struct{}{},
		holds: map[string]chan struct{}{}, entered: map[string]chan struct{}{}, fail: map[string]bool{}}
}

func (s *trickleSink) send(ctx context.Context, b [][]byte) error {
	s.mu.Lock()
	for _, v := range b {
		if s.fail[string(v)] {
			delete(s.fail, string(v))
			s.mu.Unlock()
			return vq.Permanent(errors.New("poison"))
		}
	}
	var hold []chan struct{}
	for _, v := range b {
		if h, ok := s.holds[string(v)]; ok {
			hold = append(hold, h)
			if in, ok := s.entered[string(v)]; ok {
				close(in)
				delete(s.entered, string(v))
			}
		}
	}
	s.mu.Unlock()
	for _, h := range hold {
		select {
		case <-h:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
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

// arrived is closed once item it has been delivered.
func (s *trickleSink) arrived(it string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch, ok := s.wait[it]; ok {
		return ch
	}
	ch := make(chan struct{})
	if _, ok := s.at[it]; ok {
		close(ch)
		return ch
	}
	s.wait[it] = ch
	return ch
}

// hold has item it wait in Send until release is called; entered is
// closed once it is there.
func (s *trickleSink) hold(it string) (entered <-chan struct{}, release func()) {
	ch, in := make(chan struct{}), make(chan struct{})
	s.mu.Lock()
	s.holds[it] = ch
	s.entered[it] = in
	s.mu.Unlock()
	var once sync.Once
	return in, func() { once.Do(func() { close(ch) }) }
}

// within fails the test unless item it is delivered within trickleBound
// from now.
func (s *trickleSink) within(t *testing.T, it, what string) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-s.arrived(it):
		return time.Since(start)
	case <-time.After(trickleBound):
		t.Fatalf("%s: %s not delivered within %v (FlushInterval %v)", what, it, trickleBound, trickleInterval)
		return 0
	}
}

// inSend fails the test unless entered (from hold) is closed within
// trickleBound.
func inSend(t *testing.T, entered <-chan struct{}, it string) {
	t.Helper()
	select {
	case <-entered:
	case <-time.After(trickleBound):
		t.Fatalf("%s did not reach Send within %v", it, trickleBound)
	}
}

// shardOf is the keyed shard a key's items go to (the engine's hash): the
// tests put keys side by side in one shard with it.
func shardOf(key uint64) int { return int((key * 0x9E3779B97F4A7C15) >> (64 - 6)) }

// sameShard returns a key other than key whose items share key's shard.
func sameShard(key uint64) uint64 {
	for k := key + 1; ; k++ {
		if shardOf(k) == shardOf(key) {
			return k
		}
	}
}

func trickleConfig(s *trickleSink, mode vq.WALMode, collectors int, dir string) vq.Config[[]byte] {
	cfg := vq.Config[[]byte]{Send: s.send, BatchSize: 1000, Workers: 2, Collectors: collectors,
		FlushInterval: trickleInterval, Retry: vq.RetryPolicy{MaxAttempts: 1}}
	if mode != vq.WALModeDefault {
		cfg.WAL = vq.WALConfig{Dir: dir, Mode: mode, SegmentSize: 1 << 20, SyncInterval: 10 * time.Millisecond}
	}
	return cfg
}

func modeName(m vq.WALMode) string {
	if m == vq.WALModeDefault {
		return "memory"
	}
	return m.String()
}

// TestAttackKeyedTrickle: one keyed item at a time, each enqueued as the
// last arrived and paced a tick apart, over a few keys (so an item's shard
// just had a batch in flight), in every WAL mode, with one collector and
// with four while GOMAXPROCS moves: every item is delivered within the
// bound. Then a key's item waits behind its shard's batch held in Send
// (another key's, of the same shard): once that batch is let go, it is
// delivered within the bound.
func TestAttackKeyedTrickle(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, mode := range []vq.WALMode{vq.WALModeDefault, vq.Periodic, vq.Sync} {
		for _, collectors := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s/collectors=%d", modeName(mode), collectors), func(t *testing.T) {
				s := newTrickleSink()
				q, err := vq.New(trickleConfig(s, mode, collectors, t.TempDir()))
				if err != nil {
					t.Fatal(err)
				}
				defer q.Close()
				stop := make(chan struct{})
				var procs sync.WaitGroup
				if collectors > 1 {
					procs.Go(func() {
						for i := 0; ; i++ {
							select {
							case <-stop:
								return
							case <-time.After(7 * time.Millisecond):
								runtime.GOMAXPROCS(1 + i%4)
							}
						}
					})
				}
				defer procs.Wait()
				defer close(stop)
				pace := time.NewTicker(trickleInterval / 2)
				defer pace.Stop()
				var worst time.Duration
				for i := range 40 {
					<-pace.C
					it := fmt.Sprintf("t/%d", i)
					if err := q.EnqueueKey(uint64(i%3), []byte(it)); err != nil {
						t.Fatal(err)
					}
					worst = max(worst, s.within(t, it, "trickle"))
				}

				// Behind a batch in flight: key a's item is held in Send;
				// key b, of the same shard, waits for it.
				const a = 100
				b := sameShard(a)
				entered, release := s.hold("held/a")
				defer release()
				if err := q.EnqueueKey(a, []byte("held/a")); err != nil {
					t.Fatal(err)
				}
				inSend(t, entered, "held/a")
				if err := q.EnqueueKey(b, []byte("behind/b")); err != nil {
					t.Fatal(err)
				}
				<-pace.C
				<-pace.C
				<-pace.C
				select {
				case <-s.arrived("behind/b"):
					t.Fatal("key b's item delivered while its shard's batch was held in Send")
				default:
				}
				release()
				s.within(t, "held/a", "the held batch")
				worst = max(worst, s.within(t, "behind/b", "behind a batch in flight"))
				t.Logf("worst wait %v (FlushInterval %v)", worst, trickleInterval)
			})
		}
	}
}

// TestAttackKeyedTrickleAfterReplay: keyed items accepted while a replay
// is under way wait for it (per key, replayed items go first), and once it
// is over they are delivered within the bound; then a trickle flows as
// before. The replay is held in Send on its first batch while new items
// of the replayed keys and of others come in.
func TestAttackKeyedTrickleAfterReplay(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, mode := range []vq.WALMode{vq.Periodic, vq.Sync} {
		t.Run(modeName(mode), func(t *testing.T) {
			dir := t.TempDir()
			// First run: the sink never takes anything; Stop runs out of
			// time and leaves every item in the WAL.
			cfg := trickleConfig(newTrickleSink(), mode, 1, dir)
			cfg.Retry = vq.RetryPolicy{MaxAttempts: vq.RetryForever, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
			cfg.Send = func(ctx context.Context, _ [][]byte) error {
				<-ctx.Done()
				return ctx.Err()
			}
			q, err := vq.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 50 {
				if err := q.EnqueueKey(uint64(i%5), fmt.Appendf(nil, "r/%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			err = q.Stop(ctx)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("first run's Stop: %v; want it out of time", err)
			}
			if st := q.Stats(); st.LeftOnDisk == 0 {
				t.Fatalf("first run left nothing in the WAL: %+v", st)
			}

			s := newTrickleSink()
			entered, release := s.hold("r/0")
			defer release()
			q, err = vq.New(trickleConfig(s, mode, 1, dir))
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			inSend(t, entered, "r/0")
			if !q.Stats().Backlog.Replaying {
				t.Fatal("the replay is over while its first batch is held in Send")
			}
			for i := range 10 { // during the replay: replayed keys and others
				if err := q.EnqueueKey(uint64(i), fmt.Appendf(nil, "n/%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			release()
			for i := range 10 {
				s.within(t, fmt.Sprintf("n/%d", i), "accepted during the replay")
			}
			for i := range 50 {
				s.within(t, fmt.Sprintf("r/%d", i), "replayed")
			}
			for i := range 10 {
				it := fmt.Sprintf("after/%d", i)
				if err := q.EnqueueKey(uint64(i%3), []byte(it)); err != nil {
					t.Fatal(err)
				}
				s.within(t, it, "after the replay")
			}
		})
	}
}

// TestAttackKeyedTrickleParked: with ParkKeys, a key parked behind its
// dead letter holds back neither the other keys of its shard nor, once its
// dead letter is requeued, its own parked items: each is delivered within
// the bound.
func TestAttackKeyedTrickleParked(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, mode := range []vq.WALMode{vq.Periodic, vq.Sync} {
		t.Run(modeName(mode), func(t *testing.T) {
			s := newTrickleSink()
			cfg := trickleConfig(s, mode, 2, t.TempDir())
			cfg.ParkKeys = true
			q, err := vq.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			const parked = 7
			other := sameShard(parked)
			s.mu.Lock()
			s.fail["p/0"] = true
			s.mu.Unlock()
			if err := q.EnqueueKey(parked, []byte("p/0")); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(trickleBound)
			for q.Stats().ParkedKeys != 1 {
				if time.Now().After(deadline) {
					t.Fatalf("key %d not parked within %v: %+v", parked, trickleBound, q.Stats())
				}
				time.Sleep(time.Millisecond)
			}
			for i := range 20 {
				if err := q.EnqueueKey(parked, fmt.Appendf(nil, "p/%d", i+1)); err != nil {
					t.Fatal(err)
				}
				it := fmt.Sprintf("o/%d", i)
				if err := q.EnqueueKey(other, []byte(it)); err != nil {
					t.Fatal(err)
				}
				s.within(t, it, "beside a parked key in its shard")
			}
			select {
			case <-s.arrived("p/1"):
				t.Fatal("an item of the parked key was delivered before its dead letter")
			default:
			}
			if _, err := q.RequeueDeadLetters(); err != nil {
				t.Fatal(err)
			}
			for i := range 21 {
				s.within(t, fmt.Sprintf("p/%d", i), "released")
			}
			for i := range 5 {
				it := fmt.Sprintf("p/after/%d", i)
				if err := q.EnqueueKey(parked, []byte(it)); err != nil {
					t.Fatal(err)
				}
				s.within(t, it, "once the key is released")
			}
		})
	}
}
