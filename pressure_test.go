package vinequeue

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vineroute/vinequeue/governor"
	"github.com/vineroute/vinequeue/internal/engine"
	"github.com/vineroute/vinequeue/wal"
)

// TestMemoryPressure: a producer much faster than Send, Limit 64 MiB. For
// each policy the bytes held never pass Hard by more than a ring's worth,
// and every item is accounted for.
func TestMemoryPressure(t *testing.T) {
	const (
		limit    = 64 << 20
		itemSize = 64 << 10
		ringSize = 16
		batch    = 16
	)
	items := 2000 // 125 MiB offered: about twice the limit
	if testing.Short() {
		items = 1500
	}
	for _, policy := range []Policy{Reject, Block, Spill} {
		t.Run(policy.String(), func(t *testing.T) {
			var delivered atomic.Int64
			var maxHeld atomic.Int64
			var q *Queue[[]byte]
			observe := func() {
				h := int64(q.Stats().BytesHeld)
				for {
					m := maxHeld.Load()
					if h <= m || maxHeld.CompareAndSwap(m, h) {
						return
					}
				}
			}
			var levels []Level
			var lmu sync.Mutex
			producersDone := make(chan struct{})
			var err error
			q, err = New(Config[[]byte]{
				Send: func(ctx context.Context, b [][]byte) error {
					observe()
					if policy == Reject {
						// The sink stalls until the producers are done, so
						// they are as fast as can be against it.
						select {
						case <-producersDone:
						case <-ctx.Done():
							return ctx.Err()
						}
					}
					// A slow sink: ~16 MiB per 10ms, far below the producers.
					tm := time.NewTimer(10 * time.Millisecond)
					defer tm.Stop()
					select {
					case <-tm.C:
					case <-ctx.Done():
						return ctx.Err()
					}
					delivered.Add(int64(len(b)))
					return nil
				},
				BatchSize: batch, RingSize: ringSize, Workers: 1,
				WAL: walFor(t, policy),
				Memory: MemoryConfig{Limit: limit, Policy: policy, OnLevelChange: func(_, to Level) {
					lmu.Lock()
					levels = append(levels, to)
					lmu.Unlock()
				}},
			})
			if err != nil {
				t.Fatal(err)
			}
			var accepted, rejected atomic.Int64
			var wg sync.WaitGroup
			for p := 0; p < 4; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < items/4; i++ {
						err := q.Enqueue(make([]byte, itemSize))
						switch {
						case err == nil:
							accepted.Add(1)
						case errors.Is(err, ErrFull):
							rejected.Add(1)
						default:
							t.Error(err)
							return
						}
						observe()
					}
				}()
			}
			wg.Wait()
			close(producersDone)
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			st := q.Stats()
			hard := int64(limit) * 95 / 100
			// Items in rings are held but accounted only once the collector
			// drains them (at the latest, in Stop's last drain); a queue has
			// at most ringsPerP rings per P, so that is the bound past Hard.
			slack := int64(engine.RingsPerP*runtime.GOMAXPROCS(0)*ringSize+batch) * (itemSize + 24)
			t.Logf("%v: accepted %d, rejected %d, delivered %d, spilled %d, max held %.1f MiB (hard %.1f MiB), levels %v, delayed %d",
				policy, accepted.Load(), rejected.Load(), delivered.Load(), st.Spilled, float64(maxHeld.Load())/(1<<20), float64(hard)/(1<<20), levels, st.Delayed)
			if m := maxHeld.Load(); m > hard+slack {
				t.Errorf("held %d bytes, more than hard %d + %d rings per P %d", m, hard, engine.RingsPerP, slack)
			}
			if delivered.Load() != accepted.Load() || st.Delivered != uint64(accepted.Load()) {
				t.Errorf("delivered %d (stats %d), accepted %d", delivered.Load(), st.Delivered, accepted.Load())
			}
			if st.Rejected != uint64(rejected.Load()) {
				t.Errorf("Stats.Rejected %d, saw %d ErrFull", st.Rejected, rejected.Load())
			}
			switch policy {
			case Reject:
				if rejected.Load() == 0 {
					t.Error("no item rejected with twice the limit offered")
				}
			case Spill:
				if rejected.Load() != 0 || accepted.Load() != int64(items/4*4) || st.Dropped != 0 {
					t.Errorf("Spill: accepted %d, rejected %d, dropped %d", accepted.Load(), rejected.Load(), st.Dropped)
				}
				if st.Spilled == 0 {
					t.Error("Spill: nothing spilled with twice the limit offered")
				}
			case Block:
				if rejected.Load() != 0 || accepted.Load() != int64(items/4*4) {
					t.Errorf("Block: accepted %d, rejected %d", accepted.Load(), rejected.Load())
				}
				if st.Blocked == 0 {
					t.Error("Block: no producer waited")
				}
			}
			lmu.Lock()
			defer lmu.Unlock()
			sawHard := false
			for _, l := range levels {
				sawHard = sawHard || l == LevelHard
			}
			if !sawHard {
				t.Errorf("the level never reached Hard: %v", levels)
			}
		})
	}
}

// TestGOMEMLIMITChild runs a child process with GOMEMLIMIT=96MiB and no
// Memory.Limit: the governor must pick GOMEMLIMIT as the limit, keep the
// queue under it (Reject), and the child must stay alive with counts that
// agree.
func TestGOMEMLIMITChild(t *testing.T) {
	if os.Getenv("VINEQUEUE_GOMEMLIMIT_CHILD") == "1" {
		gomemlimitChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGOMEMLIMITChild$", "-test.v")
	cmd.Env = append(os.Environ(), "VINEQUEUE_GOMEMLIMIT_CHILD=1", "GOMEMLIMIT=96MiB")
	out, err := cmd.CombinedOutput()
	skipIfNoReexec(t, err)
	if err != nil {
		t.Fatalf("child failed: %v\n%s", err, out)
	}
	var fields map[string]int64
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "CHILD "); ok {
			fields = map[string]int64{}
			for _, kv := range strings.Fields(rest) {
				k, v, _ := strings.Cut(kv, "=")
				n, _ := strconv.ParseInt(v, 10, 64)
				fields[k] = n
			}
		}
	}
	if fields == nil {
		t.Fatalf("child printed no result:\n%s", out)
	}
	t.Logf("child: %v", fields)
	if fields["accepted"] != fields["delivered"] || fields["accepted"]+fields["rejected"] != fields["offered"] {
		t.Errorf("counts disagree: %v", fields)
	}
	if fields["limit"] != 96<<20 || !strings.Contains(string(out), "gomemlimit=true") {
		t.Errorf("the governor's limit is not GOMEMLIMIT (96 MiB): %v", fields)
	}
	if fields["rejected"] == 0 {
		t.Errorf("nothing rejected: the governor did not hold the queue under GOMEMLIMIT: %v", fields)
	}
}

func gomemlimitChild() {
	var delivered atomic.Int64
	producerDone := make(chan struct{})
	q, err := New(Config[[]byte]{
		Send: func(ctx context.Context, b [][]byte) error {
			<-producerDone // the sink stalls while the producer runs
			delivered.Add(int64(len(b)))
			return nil
		},
		BatchSize: 16, RingSize: 16,
		Memory: MemoryConfig{Measure: MeasureProcess},
	})
	if err != nil {
		println("CHILD-ERROR", err.Error())
		os.Exit(2)
	}
	const offered = 2000 // 2000 x 64 KiB = 125 MiB offered, more than GOMEMLIMIT
	var accepted, rejected int64
	for i := 0; i < offered; i++ {
		switch err := q.Enqueue(make([]byte, 64<<10)); {
		case err == nil:
			accepted++
		case errors.Is(err, ErrFull):
			rejected++
		default:
			println("CHILD-ERROR", err.Error())
			os.Exit(2)
		}
	}
	close(producerDone)
	lim := q.e.MemoryLimit()
	if err := q.Close(); err != nil {
		println("CHILD-ERROR", err.Error())
		os.Exit(2)
	}
	os.Stdout.WriteString("CHILD limit=" + strconv.FormatInt(lim.Bytes, 10) + " gomemlimit=" + strconv.FormatBool(lim.Source == governor.SourceGOMEMLIMIT) + " offered=" + strconv.Itoa(offered) + " accepted=" + strconv.FormatInt(accepted, 10) +
		" rejected=" + strconv.FormatInt(rejected, 10) + " delivered=" + strconv.FormatInt(delivered.Load(), 10) + "\n")
}

// skipIfNoReexec skips a test whose child process could not start because
// the test binary cannot be executed directly: the arm64 run under
// qemu-user, where only the parent is emulated.
func skipIfNoReexec(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, syscall.ENOEXEC) {
		t.Skipf("cannot re-execute the test binary here (emulated run?): %v", err)
	}
}

// walFor gives the Spill policy a WAL in Overflow mode (only spills written).
func walFor(t *testing.T, p Policy) WALConfig {
	if p != Spill {
		return WALConfig{}
	}
	return WALConfig{Dir: t.TempDir(), Mode: Overflow, SegmentSize: 16 << 20, Compression: NoCompression}
}

func TestLevelNumbering(t *testing.T) {
	for _, c := range []struct {
		g governor.Level
		q Level
	}{{governor.LevelNormal, LevelNormal}, {governor.LevelSoft, LevelSoft}, {governor.LevelHard, LevelHard}} {
		if levelOf(c.g) != c.q || c.g.String() != c.q.String() {
			t.Errorf("governor %v maps to %v, want %v", c.g, levelOf(c.g), c.q)
		}
	}
	for _, c := range []struct {
		w wal.Compression
		q Compression
	}{{wal.Snappy, Snappy}, {wal.LZ4, LZ4}, {wal.NoCompression, NoCompression}} {
		if wal.Compression(c.q) != c.w || c.q.String() != c.w.String() {
			t.Errorf("%v maps to wal %v, want %v", c.q, wal.Compression(c.q), c.w)
		}
	}
	for _, c := range []struct {
		g governor.Measure
		q Measure
	}{{governor.MeasureAuto, MeasureAuto}, {governor.MeasureProcessMemory, MeasureProcess}, {governor.MeasureQueueBytes, MeasureQueue}} {
		if c.q.governor() != c.g {
			t.Errorf("%v maps to governor %v, want %v", c.q, c.q.governor(), c.g)
		}
	}
	// Policy and WALMode reach the engine by number (Config.engine).
	for _, c := range []struct {
		e engine.Policy
		q Policy
	}{{engine.Reject, Reject}, {engine.Spill, Spill}, {engine.Block, Block}} {
		if engine.Policy(c.q) != c.e {
			t.Errorf("%v maps to engine policy %d, want %d", c.q, engine.Policy(c.q), c.e)
		}
	}
	for _, c := range []struct {
		e engine.WALMode
		q WALMode
	}{{engine.Overflow, Overflow}, {engine.Periodic, Periodic}, {engine.Sync, Sync}} {
		if engine.WALMode(c.q) != c.e {
			t.Errorf("%v maps to engine mode %d, want %d", c.q, engine.WALMode(c.q), c.e)
		}
	}
}
