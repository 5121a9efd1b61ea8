package sinkmodel

import (
	"fmt"
	"math"
	"time"
)

// Model is the latency of one Send as a function of its batch size:
//
//	latency(n) = PerCall + PerItem·n + PerItem·Steepness·max(0, n−Knee)
//
// times a noise factor drawn uniformly from [1−Noise, 1+Noise]. Below the
// knee, throughput n/latency(n) rises with n as the per-call cost is
// amortised; beyond it every extra item costs (1+Steepness)·PerItem, which
// for a steep enough knee (PerCall < PerItem·Steepness·Knee) makes throughput
// fall again, so the best batch size is the knee. This is the shape of a
// Kafka producer whose requests outgrow a broker buffer, a socket window or a
// max request size with back-off.
type Model struct {
	PerCall   time.Duration // fixed cost of one Send
	PerItem   time.Duration // cost of each item up to the knee
	Knee      int           // items; 0 means no knee
	Steepness float64       // extra per-item cost beyond the knee, in units of PerItem
	Noise     float64       // relative amplitude of uniform noise, in [0, 1)
}

// Latency returns the noiseless latency of a Send of n items (n < 1 counts as 1).
func (m Model) Latency(n int) time.Duration {
	return time.Duration(m.latency(n))
}

func (m Model) latency(n int) float64 {
	n = max(n, 1)
	l := float64(m.PerCall) + float64(m.PerItem)*float64(n)
	if m.Knee > 0 && n > m.Knee {
		l += float64(m.PerItem) * m.Steepness * float64(n-m.Knee)
	}
	return max(l, 1) // a Send takes time: keeps throughput finite
}

// noisy scales the noiseless latency by 1+Noise·(2u−1) for u uniform in [0,1).
func (m Model) noisy(n int, u float64) float64 {
	l := m.latency(n)
	if m.Noise > 0 {
		l *= 1 + min(m.Noise, 0.99)*(2*u-1)
	}
	return max(l, 1)
}

// Throughput is the noiseless items per second of one sender using batches of n.
func (m Model) Throughput(n int) float64 {
	return float64(max(n, 1)) / m.latency(n) * float64(time.Second)
}

// Validate reports a model that cannot describe a sink.
func (m Model) Validate() error {
	switch {
	case m.PerCall < 0 || m.PerItem < 0:
		return fmt.Errorf("sinkmodel: negative cost in %+v", m)
	case m.PerCall == 0 && m.PerItem == 0:
		return fmt.Errorf("sinkmodel: a Send must cost something: %+v", m)
	case m.Knee < 0 || m.Steepness < 0 || math.IsNaN(m.Steepness):
		return fmt.Errorf("sinkmodel: bad knee in %+v", m)
	case !(m.Noise >= 0 && m.Noise < 1):
		return fmt.Errorf("sinkmodel: Noise must be in [0, 1): %+v", m)
	}
	return nil
}

func (m Model) String() string {
	return fmt.Sprintf("call=%v item=%v knee=%d steep=%g noise=%g", m.PerCall, m.PerItem, m.Knee, m.Steepness, m.Noise)
}
