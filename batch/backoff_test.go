package batch

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestRetryPolicyDefaults(t *testing.T) {
	p := RetryPolicy{}.WithDefaults()
	if want := (RetryPolicy{MaxAttempts: 5, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 5 * time.Second, Multiplier: 2, Jitter: 0.2}); p != want {
		t.Errorf("defaults %+v, want %+v", p, want)
	}
	if j := (RetryPolicy{Jitter: -1}).WithDefaults().Jitter; j != 0 {
		t.Errorf("negative jitter should disable it, got %v", j)
	}
	// An InitialBackoff above the default cap raises the defaulted cap.
	if m := (RetryPolicy{InitialBackoff: time.Minute}).WithDefaults().MaxBackoff; m != time.Minute {
		t.Errorf("MaxBackoff %v, want 1m", m)
	}
	if err := (RetryPolicy{InitialBackoff: time.Minute}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestRetryPolicyValidate(t *testing.T) {
	for _, p := range []RetryPolicy{{}, {MaxAttempts: 1, Multiplier: 1, Jitter: 1}, {Jitter: -0.5}} {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
	for _, c := range []struct {
		p     RetryPolicy
		field string
	}{
		{RetryPolicy{MaxAttempts: -2}, "MaxAttempts"},
		{RetryPolicy{InitialBackoff: -1}, "InitialBackoff"},
		{RetryPolicy{MaxBackoff: -1}, "MaxBackoff"},
		{RetryPolicy{InitialBackoff: time.Second, MaxBackoff: time.Millisecond}, "MaxBackoff"},
		{RetryPolicy{Multiplier: 0.5}, "Multiplier"},
		{RetryPolicy{Multiplier: -2}, "Multiplier"},
		{RetryPolicy{Multiplier: math.NaN()}, "Multiplier"},
		{RetryPolicy{Multiplier: math.Inf(1)}, "Multiplier"},
		{RetryPolicy{Jitter: 1.5}, "Jitter"},
		{RetryPolicy{Jitter: math.NaN()}, "Jitter"},
	} {
		err := c.p.Validate()
		var pe *PolicyError
		if !errors.Is(err, ErrInvalidPolicy) || !errors.As(err, &pe) {
			t.Errorf("%+v: got %v, want a *PolicyError", c.p, err)
			continue
		}
		if pe.Field != c.field || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%+v: %v names %q, want %q", c.p, err, pe.Field, c.field)
		}
	}
}

func TestBackoffNominalGrowsAndCaps(t *testing.T) {
	b := NewBackoff(RetryPolicy{Jitter: -1}) // 10ms ×2, cap 5s
	want := []time.Duration{10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5000, 5000}
	for i, w := range want {
		if got := b.Nominal(i + 1); got != w*time.Millisecond {
			t.Errorf("Nominal(%d) = %v, want %v", i+1, got, w*time.Millisecond)
		}
		if got := b.Delay(i+1, nil); got != w*time.Millisecond {
			t.Errorf("Delay(%d) without jitter = %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	for _, n := range []int{0, -3, math.MinInt} {
		if d := b.Delay(n, nil); d != 0 {
			t.Errorf("Delay(%d) = %v, want 0", n, d)
		}
	}
	// Huge n must neither overflow nor exceed the cap.
	for _, n := range []int{64, 5000, math.MaxInt} {
		if d := b.Delay(n, nil); d != 5*time.Second {
			t.Errorf("Delay(%d) = %v, want the cap", n, d)
		}
	}
}

func TestBackoffJitterRangeAndCap(t *testing.T) {
	p := RetryPolicy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, Multiplier: 3, Jitter: 0.25}
	b := NewBackoff(p)
	src := rand.NewPCG(1, 2)
	for n := 1; n <= 8; n++ {
		nom := b.Nominal(n)
		lo, hi := time.Duration(float64(nom)*0.75), min(time.Duration(float64(nom)*1.25), time.Second)
		sawLow, sawHigh := false, false
		for range 2000 {
			d := b.Delay(n, src)
			if d < lo || d > hi {
				t.Fatalf("Delay(%d) = %v, want in [%v, %v]", n, d, lo, hi)
			}
			sawLow = sawLow || d < nom-nom/10
			sawHigh = sawHigh || (d > nom+nom/10 && nom < time.Second)
		}
		if !sawLow {
			t.Errorf("n=%d: jitter never went well below nominal", n)
		}
		if nom*5/4 <= time.Second && !sawHigh {
			t.Errorf("n=%d: jitter never went well above nominal", n)
		}
	}
	// The global source (nil) obeys the same bounds.
	for range 1000 {
		if d := b.Delay(1, nil); d < 75*time.Millisecond || d > 125*time.Millisecond {
			t.Fatalf("Delay(1) with the global source = %v", d)
		}
	}
}

func TestBackoffDeterministic(t *testing.T) {
	b := NewBackoff(RetryPolicy{})
	a1, a2 := rand.NewPCG(7, 7), rand.NewPCG(7, 7)
	for n := 1; n <= 20; n++ {
		if d1, d2 := b.Delay(n, a1), b.Delay(n, a2); d1 != d2 {
			t.Errorf("n=%d: %v != %v from equal sources", n, d1, d2)
		}
	}
}

func TestNewBackoffClampsInvalid(t *testing.T) {
	// NewBackoff never fails: bad fields are clamped, so no wait is negative.
	for _, p := range []RetryPolicy{
		{InitialBackoff: -time.Second, MaxBackoff: -time.Second, Multiplier: math.NaN(), Jitter: 7},
		{Multiplier: 0.1, Jitter: math.NaN()},
		{InitialBackoff: time.Second, MaxBackoff: time.Millisecond},
	} {
		b := NewBackoff(p)
		src := rand.NewPCG(3, 4)
		for n := 1; n < 100; n++ {
			if d := b.Delay(n, src); d < 0 {
				t.Fatalf("%+v: Delay(%d) = %v", p, n, d)
			}
		}
	}
}

func BenchmarkBackoffDelay(b *testing.B) {
	bo := NewBackoff(RetryPolicy{})
	src := rand.NewPCG(1, 1)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = bo.Delay(i%12+1, src)
	}
}
