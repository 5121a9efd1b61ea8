package sinkmodel

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var knee = Model{PerCall: 2 * time.Millisecond, PerItem: time.Microsecond, Knee: 2000, Steepness: 10}

func TestModelLatency(t *testing.T) {
	for _, c := range []struct {
		n    int
		want time.Duration
	}{
		{0, 2*time.Millisecond + time.Microsecond}, // counts as 1
		{1, 2*time.Millisecond + time.Microsecond},
		{1000, 3 * time.Millisecond},
		{2000, 4 * time.Millisecond},
		{2100, 4*time.Millisecond + 100*time.Microsecond + 1000*time.Microsecond},
	} {
		if got := knee.Latency(c.n); got != c.want {
			t.Errorf("Latency(%d) = %v, want %v", c.n, got, c.want)
		}
	}
	// A steep knee is the throughput optimum.
	if !(knee.Throughput(2000) > knee.Throughput(1900) && knee.Throughput(2000) > knee.Throughput(2100)) {
		t.Error("the knee is not the optimum")
	}
	if err := knee.Validate(); err != nil {
		t.Error(err)
	}
	for _, bad := range []Model{{}, {PerCall: -1, PerItem: 1}, {PerItem: 1, Knee: -1}, {PerItem: 1, Noise: 1}, {PerItem: 1, Steepness: math.NaN()}} {
		if bad.Validate() == nil {
			t.Errorf("%v validated", bad)
		}
	}
}

func TestNoiseBounds(t *testing.T) {
	m := knee
	m.Noise = 0.2
	for _, u := range []float64{0, 0.25, 0.5, 0.999999} {
		l := m.noisy(1000, u)
		if l < 0.8*3e6-1 || l > 1.2*3e6+1 {
			t.Errorf("u=%v: %v outside ±20 %%", u, l)
		}
	}
}

func TestRunFixedMatchesModel(t *testing.T) {
	for _, w := range []int{1, 3} {
		r := Run(Sim{Workers: w, Duration: 10 * time.Second, Phases: []Phase{{Model: knee}}, Window: time.Second}, Fixed(1000))
		want := float64(w) * knee.Throughput(1000)
		if math.Abs(r.Throughput-want)/want > 1e-9 {
			t.Errorf("W=%d: %v items/s, want %v", w, r.Throughput, want)
		}
		if len(r.Windows) != 10 {
			t.Fatalf("%d windows", len(r.Windows))
		}
		for _, win := range r.Windows {
			if math.Abs(win.Throughput-want)/want > 1e-6 || win.MeanSize != 1000 {
				t.Errorf("window %+v, want %v items/s", win, want)
			}
		}
	}
}

func TestRunProRataAtTheEnd(t *testing.T) {
	// One Send of 1000 items taking 3 ms, cut off after 1.5 ms: half counts.
	r := Run(Sim{Duration: 1500 * time.Microsecond, Phases: []Phase{{Model: knee}}}, Fixed(1000))
	if math.Abs(r.Items-500) > 1e-6 || r.Sends != 1 {
		t.Errorf("items %v sends %d", r.Items, r.Sends)
	}
}

func TestRunDeterministic(t *testing.T) {
	m := knee
	m.Noise = 0.3
	sim := Sim{Workers: 4, Duration: 2 * time.Second, Phases: []Phase{{Model: m}, {At: time.Second, Model: Model{PerCall: time.Millisecond, PerItem: time.Microsecond}}}, Seed: 42, Window: 100 * time.Millisecond}
	a, b := Run(sim, Fixed(700)), Run(sim, Fixed(700))
	if a.Items != b.Items || a.Sends != b.Sends {
		t.Errorf("two runs differ: %v/%d vs %v/%d", a.Items, a.Sends, b.Items, b.Sends)
	}
	sim.Seed = 43
	if c := Run(sim, Fixed(700)); c.Items == a.Items {
		t.Error("the seed does not matter")
	}
}

// recorder checks the simulation's calling contract.
type recorder struct {
	size     int
	observed int
	items    int
}

func (r *recorder) Size() int { return r.size }
func (r *recorder) Observe(items int, latency time.Duration, err error) {
	r.observed++
	r.items += items
	if err != nil || latency <= 0 {
		panic("bad observation")
	}
}

func TestRunObservesCompletedSends(t *testing.T) {
	rec := &recorder{size: 100}
	r := Run(Sim{Workers: 2, Duration: time.Second, Phases: []Phase{{Model: knee}}}, rec)
	// Every Send that completed within the run is observed; the ones cut off are not.
	if rec.observed != r.Sends-2 || rec.items != rec.observed*100 {
		t.Errorf("observed %d of %d sends", rec.observed, r.Sends)
	}
}

func TestPhaseSwitch(t *testing.T) {
	fast := Model{PerCall: time.Millisecond, PerItem: 0}
	slow := Model{PerCall: 4 * time.Millisecond, PerItem: 0}
	r := Run(Sim{Duration: 2 * time.Second, Phases: []Phase{{Model: fast}, {At: time.Second, Model: slow}}, Window: time.Second}, Fixed(10))
	if got := r.Windows[0].Throughput; math.Abs(got-10000) > 1 {
		t.Errorf("first second %v items/s, want 10000", got)
	}
	if got := r.Windows[1].Throughput; math.Abs(got-2500) > 1 {
		t.Errorf("second second %v items/s, want 2500", got)
	}
}

func TestLogGrid(t *testing.T) {
	g := LogGrid(1, 20000, 10)
	if g[0] != 1 || g[len(g)-1] != 20000 {
		t.Fatalf("grid %v", g)
	}
	for i := 1; i < len(g); i++ {
		if g[i] <= g[i-1] {
			t.Fatalf("not increasing: %v", g)
		}
	}
	if len(g) < 40 || len(g) > 50 {
		t.Errorf("%d points for 4.3 decades at 10 per decade", len(g))
	}
}

func TestSinkSimClock(t *testing.T) {
	var clock SimClock
	s := NewSink(knee, &clock, 1)
	for range 10 {
		lat, err := s.Send(context.Background(), 1000)
		if err != nil || lat != 3*time.Millisecond {
			t.Fatalf("lat %v err %v", lat, err)
		}
	}
	if clock.Now() != 30*time.Millisecond || s.Sends() != 10 || s.Items() != 10000 || s.Busy() != 30*time.Millisecond {
		t.Errorf("clock %v sends %d items %d busy %v", clock.Now(), s.Sends(), s.Items(), s.Busy())
	}
	s.SetModel(Model{PerCall: time.Second})
	if lat, _ := s.Send(context.Background(), 5); lat != time.Second+0 || s.Model().PerCall != time.Second {
		t.Errorf("after SetModel: %v", lat)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Send(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("done ctx: %v", err)
	}
	send := SendFunc[string](s)
	if err := send(context.Background(), []string{"a", "b"}); err != nil || s.Items() != 10007 {
		t.Errorf("SendFunc: %v, items %d", err, s.Items())
	}
}

func TestSinkConcurrent(t *testing.T) {
	var clock SimClock
	m := knee
	m.Noise = 0.1
	s := NewSink(m, &clock, 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if _, err := s.Send(context.Background(), 10); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 100 {
			s.SetModel(Model{PerCall: time.Duration(i+1) * time.Microsecond})
		}
	})
	wg.Wait()
	if s.Sends() != 1600 || s.Items() != 16000 {
		t.Errorf("sends %d items %d", s.Sends(), s.Items())
	}
}

func TestRealClockWaitCancel(t *testing.T) {
	c := NewRealClock()
	if err := c.Wait(context.Background(), 50*time.Microsecond); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Wait(ctx, time.Hour) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v", err)
		}
	case <-time.After(time.Minute): // hang guard, not a speed assertion
		t.Fatal("cancel did not end the wait")
	}
	if c.Now() <= 0 {
		t.Error("real clock did not advance")
	}
}

// BenchmarkRealSinkSend measures how closely the real-time mode keeps to a
// modelled latency: the reported ns/op should be close to 200µs.
func BenchmarkRealSinkSend(b *testing.B) {
	s := NewSink(Model{PerCall: 100 * time.Microsecond, PerItem: 100 * time.Nanosecond}, NewRealClock(), 1)
	ctx := context.Background()
	for b.Loop() {
		if _, err := s.Send(ctx, 1000); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRunDegenerate(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second} {
		if r := Run(Sim{Duration: d, Window: time.Millisecond}, Fixed(0)); r.Items != 0 || r.Sends != 0 {
			t.Errorf("duration %v: %+v", d, r)
		}
	}
	// No phases: a default model; Fixed(0) sends 1 item.
	if r := Run(Sim{Duration: time.Second}, Fixed(0)); r.Items <= 0 || r.MeanSize != 1 {
		t.Errorf("defaults: %+v", r)
	}
}
