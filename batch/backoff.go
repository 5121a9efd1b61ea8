package batch

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Defaults applied by RetryPolicy.WithDefaults to zero fields.
const (
	DefaultMaxAttempts = 5
	// Forever as MaxAttempts retries until the context ends: for sinks
	// whose failures are always transient, where a batch must never be
	// given up on while the process runs.
	Forever               = -1
	DefaultInitialBackoff = 10 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
	DefaultMultiplier     = 2.0
	DefaultJitter         = 0.2
)

// ErrInvalidPolicy is wrapped by every error RetryPolicy.Validate returns.
var ErrInvalidPolicy = errors.New("batch: invalid retry policy")

// PolicyError names the RetryPolicy field that is invalid. It matches
// ErrInvalidPolicy with errors.Is; the root package turns it into its own
// ErrInvalidConfig naming "Retry.<Field>".
type PolicyError struct {
	Field  string // e.g. "MaxAttempts"
	Reason string // e.g. "must not be negative, got -1"
}

// Error names the field and what is wrong with it.
func (e *PolicyError) Error() string {
	return fmt.Sprintf("%v: %s: %s", ErrInvalidPolicy, e.Field, e.Reason)
}

// Unwrap makes errors.Is(err, ErrInvalidPolicy) true.
func (e *PolicyError) Unwrap() error { return ErrInvalidPolicy }

// RetryPolicy bounds the retries of a failed send. The root package's
// RetryPolicy (Config.Retry, FanOutTarget.Retry) is this type, by an alias.
// The zero value of each field selects its default.
type RetryPolicy struct {
	// MaxAttempts is the number of send calls for one batch, the first
	// included; 0 selects 5, 1 means no retry, Forever (-1) retries until
	// the context ends; other negative values are invalid.
	MaxAttempts int
	// InitialBackoff is the wait before the second attempt; 0 selects 10ms.
	InitialBackoff time.Duration
	// MaxBackoff caps every wait, jitter included; 0 selects 5s. It must not
	// be below InitialBackoff.
	MaxBackoff time.Duration
	// Multiplier grows the wait per attempt; 0 selects 2, otherwise >= 1.
	Multiplier float64
	// Jitter spreads each wait uniformly over ±Jitter of its nominal value so
	// that many queues failing together do not retry in lock-step. 0 selects
	// 0.2; a negative value disables jitter; above 1 is invalid (a wait would
	// go negative).
	Jitter float64
}

// WithDefaults returns p with every zero field replaced by its default and a
// negative Jitter replaced by 0 (no jitter). It does not validate.
func (p RetryPolicy) WithDefaults() RetryPolicy {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.InitialBackoff == 0 {
		p.InitialBackoff = DefaultInitialBackoff
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = DefaultMaxBackoff
		if p.MaxBackoff < p.InitialBackoff {
			// An explicit InitialBackoff above the default cap raises the cap
			// rather than failing validation on a field the user never set.
			p.MaxBackoff = p.InitialBackoff
		}
	}
	if p.Multiplier == 0 {
		p.Multiplier = DefaultMultiplier
	}
	if p.Jitter == 0 {
		p.Jitter = DefaultJitter
	} else if p.Jitter < 0 {
		p.Jitter = 0
	}
	return p
}

// Validate reports the first invalid field of p as a *PolicyError. Zero fields
// are valid (they select defaults), so Validate may be called before or after
// WithDefaults.
func (p RetryPolicy) Validate() error {
	d := p.WithDefaults()
	switch {
	case p.MaxAttempts < Forever:
		return &PolicyError{"MaxAttempts", fmt.Sprintf("must be Forever (-1) or not negative, got %d", p.MaxAttempts)}
	case p.InitialBackoff < 0:
		return &PolicyError{"InitialBackoff", fmt.Sprintf("must not be negative, got %v", p.InitialBackoff)}
	case p.MaxBackoff < 0:
		return &PolicyError{"MaxBackoff", fmt.Sprintf("must not be negative, got %v", p.MaxBackoff)}
	case d.MaxBackoff < d.InitialBackoff:
		return &PolicyError{"MaxBackoff", fmt.Sprintf("%v is below InitialBackoff %v", d.MaxBackoff, d.InitialBackoff)}
	case math.IsNaN(p.Multiplier) || math.IsInf(p.Multiplier, 0) || d.Multiplier < 1:
		return &PolicyError{"Multiplier", fmt.Sprintf("must be a finite number >= 1, got %v", p.Multiplier)}
	case math.IsNaN(p.Jitter) || p.Jitter > 1:
		return &PolicyError{"Jitter", fmt.Sprintf("must be at most 1, got %v", p.Jitter)}
	}
	return nil
}

// Backoff computes retry waits: the n-th wait is InitialBackoff·Multiplier^(n-1)
// capped at MaxBackoff, spread by ±Jitter, and never above MaxBackoff after
// the spread either. A Backoff is an immutable value, safe for concurrent use;
// the randomness comes from the source passed to Delay.
type Backoff struct {
	initial, max float64 // nanoseconds
	multiplier   float64
	jitter       float64
}

// NewBackoff returns the Backoff of p after WithDefaults. An invalid p (see
// Validate) is clamped into range rather than rejected, so NewBackoff never
// fails and Delay never returns a negative wait.
func NewBackoff(p RetryPolicy) Backoff {
	p = p.WithDefaults()
	b := Backoff{
		initial:    float64(max(p.InitialBackoff, 0)),
		max:        float64(max(p.MaxBackoff, 0)),
		multiplier: p.Multiplier,
		jitter:     p.Jitter,
	}
	if b.max < b.initial {
		b.max = b.initial
	}
	if !(b.multiplier >= 1) || math.IsInf(b.multiplier, 0) { // also catches NaN
		b.multiplier = 1
	}
	if !(b.jitter >= 0) { // NaN
		b.jitter = 0
	}
	b.jitter = min(b.jitter, 1)
	return b
}

// Nominal returns the n-th wait before jitter (n >= 1: the wait after the n-th
// failed attempt). n < 1 returns 0.
func (b Backoff) Nominal(n int) time.Duration {
	if n < 1 {
		return 0
	}
	return time.Duration(b.nominal(n))
}

func (b Backoff) nominal(n int) float64 {
	// Pow overflows to +Inf for large n, which min turns into the cap; the
	// exponent is computed in float64 so a huge n cannot overflow an int.
	return min(b.initial*math.Pow(b.multiplier, float64(n-1)), b.max)
}

// Delay returns the n-th wait (n >= 1) with jitter drawn from src; a nil src
// uses the concurrency-safe global source of math/rand/v2. The same src state
// gives the same delays, which is what tests rely on. The result is in
// [Nominal(n)·(1-Jitter), min(Nominal(n)·(1+Jitter), MaxBackoff)].
// n < 1 returns 0.
func (b Backoff) Delay(n int, src rand.Source) time.Duration {
	if n < 1 {
		return 0
	}
	d := b.nominal(n)
	if b.jitter > 0 {
		var u uint64
		if src != nil {
			u = src.Uint64()
		} else {
			u = rand.Uint64()
		}
		f := float64(u>>11) / (1 << 53) // uniform in [0, 1)
		d *= 1 + b.jitter*(2*f-1)
	}
	return time.Duration(min(d, b.max))
}
