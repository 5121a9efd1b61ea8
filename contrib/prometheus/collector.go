package prometheus

import (
	"context"
	"errors"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/vineroute/vinequeue"
)

// Opts names the metrics.
type Opts struct {
	// Namespace prefixes every metric name; default "vinequeue".
	Namespace string
	// Subsystem, when set, comes between the namespace and the name.
	Subsystem string
	// ConstLabels are added to every metric: tell queues apart with them.
	ConstLabels prom.Labels
}

func (o Opts) fqName(name string) string {
	ns := o.Namespace
	if ns == "" {
		ns = "vinequeue"
	}
	return prom.BuildFQName(ns, o.Subsystem, name)
}

var errNilStats = errors.New("vinequeue/contrib/prometheus: NewCollector was given a nil stats func")

// statMetric is one Stats field as a metric.
type statMetric struct {
	desc  *prom.Desc
	kind  prom.ValueType
	value func(*vinequeue.Stats) float64
}

// Collector is a prometheus.Collector over a queue's Stats. Create it with
// NewCollector and register it: prometheus.MustRegister(c).
type Collector struct {
	stats   func() vinequeue.Stats
	metrics []statMetric
}

// NewCollector returns a Collector that calls stats at each scrape; pass the
// queue's Stats method: NewCollector(q.Stats, Opts{}).
func NewCollector(stats func() vinequeue.Stats, opts Opts) *Collector {
	c := &Collector{stats: stats}
	add := func(name, help string, kind prom.ValueType, value func(*vinequeue.Stats) float64) {
		c.metrics = append(c.metrics, statMetric{
			desc:  prom.NewDesc(opts.fqName(name), help, nil, opts.ConstLabels),
			kind:  kind,
			value: value,
		})
	}
	counter := func(name, help string, value func(*vinequeue.Stats) uint64) {
		add(name, help, prom.CounterValue, func(s *vinequeue.Stats) float64 { return float64(value(s)) })
	}
	gauge := func(name, help string, value func(*vinequeue.Stats) float64) {
		add(name, help, prom.GaugeValue, value)
	}
	counter("enqueued_total", "Items accepted by the queue.", func(s *vinequeue.Stats) uint64 { return s.Enqueued })
	counter("delivered_total", "Items in batches whose Send returned nil.", func(s *vinequeue.Stats) uint64 { return s.Delivered })
	counter("rejected_total", "Items refused at the call (ErrFull, ErrWALFull, ErrTooLarge, a codec error).", func(s *vinequeue.Stats) uint64 { return s.Rejected })
	counter("dropped_total", "Items given up on and handed to OnDrop (retries exhausted, Permanent, Stop deadline without a WAL).", func(s *vinequeue.Stats) uint64 { return s.Dropped })
	counter("spilled_total", "Items written to the WAL by the memory governor.", func(s *vinequeue.Stats) uint64 { return s.Spilled })
	counter("replayed_total", "Items read back from the WAL at start-up and handed to delivery.", func(s *vinequeue.Stats) uint64 { return s.Replayed })
	counter("send_retries_total", "Send calls that were retries.", func(s *vinequeue.Stats) uint64 { return s.Retries })
	counter("corrupt_records_total", "WAL records lost to corruption.", func(s *vinequeue.Stats) uint64 { return s.Corrupt })
	counter("soft_delays_total", "Slow-path delays applied at the soft memory level.", func(s *vinequeue.Stats) uint64 { return s.Delayed })
	counter("blocked_total", "Enqueue calls that waited at the hard memory level (Policy Block).", func(s *vinequeue.Stats) uint64 { return s.Blocked })
	counter("batches_total", "Send calls that returned nil.", func(s *vinequeue.Stats) uint64 { return s.Batches })
	gauge("buffered_items", "Items accepted and not yet delivered or dropped.", func(s *vinequeue.Stats) float64 { return float64(s.Buffered) })
	gauge("held_bytes", "Bytes held by the queue, as accounted by SizeOf.", func(s *vinequeue.Stats) float64 { return float64(s.BytesHeld) })
	gauge("memory_level", "Memory governor level: 0 normal, 1 soft, 2 hard.", func(s *vinequeue.Stats) float64 { return float64(s.Level) })
	gauge("target_batch_size", "Current target batch size.", func(s *vinequeue.Stats) float64 { return float64(s.BatchSize) })
	gauge("wal_bytes", "Bytes of the WAL's unacknowledged records on disk.", func(s *vinequeue.Stats) float64 { return float64(s.WALBytes) })
	counter("left_on_disk_total", "Items Stop left in the WAL for the next start.", func(s *vinequeue.Stats) uint64 { return s.LeftOnDisk })
	counter("dead_lettered_total", "Items given up on and kept in the WAL's dead-letter log.", func(s *vinequeue.Stats) uint64 { return s.DeadLettered })
	counter("parked_total", "Items moved to the dead-letter log behind a dead letter of their key (ParkKeys).", func(s *vinequeue.Stats) uint64 { return s.Parked })
	gauge("parked_items", "Items parked now behind a dead letter of their key (ParkKeys).", func(s *vinequeue.Stats) float64 { return float64(s.ParkedItems) })
	gauge("parked_keys", "Keys parked now behind a dead letter (ParkKeys).", func(s *vinequeue.Stats) float64 { return float64(s.ParkedKeys) })
	gauge("backlog_items", "Items waiting for delivery, in memory and not yet replayed from the WAL.", func(s *vinequeue.Stats) float64 { return float64(s.Backlog.Items) })
	gauge("backlog_bytes", "Bytes waiting for delivery, in memory plus the WAL.", func(s *vinequeue.Stats) float64 { return float64(s.Backlog.Bytes) })
	gauge("backlog_oldest_timestamp_seconds", "When the oldest unacknowledged WAL record was written (Unix seconds; 0: none).", func(s *vinequeue.Stats) float64 {
		if s.Backlog.Oldest.IsZero() {
			return 0
		}
		return float64(s.Backlog.Oldest.UnixNano()) / 1e9
	})
	// A timestamp rather than an age: the durability lag is
	// time() - vinequeue_durable_through_timestamp_seconds at query time,
	// not as of the last scrape.
	gauge("durable_through_timestamp_seconds", "Every item accepted before this time is on disk, fsynced (Unix seconds; 0: nothing promised).", func(s *vinequeue.Stats) float64 {
		if s.DurableThrough.IsZero() {
			return 0
		}
		return float64(s.DurableThrough.UnixNano()) / 1e9
	})
	gauge("replaying", "1 while records found in the WAL at start-up are being delivered.", func(s *vinequeue.Stats) float64 {
		if s.Backlog.Replaying {
			return 1
		}
		return 0
	})
	return c
}

// Describe sends the descriptors of every metric of c.
func (c *Collector) Describe(ch chan<- *prom.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
}

// Collect takes one Stats snapshot and sends every metric from it. A
// Collector made with a nil stats func reports that as an invalid metric,
// which makes the registry's Gather fail, rather than panicking.
func (c *Collector) Collect(ch chan<- prom.Metric) {
	if c.stats == nil {
		for _, m := range c.metrics {
			ch <- prom.NewInvalidMetric(m.desc, errNilStats)
		}
		return
	}
	st := c.stats()
	for _, m := range c.metrics {
		ch <- prom.MustNewConstMetric(m.desc, m.kind, m.value(&st))
	}
}

// SendOpts configures SendMetrics.
type SendOpts struct {
	Opts
	// SizeBuckets are the batch-size histogram's upper bounds, in items;
	// default powers of 4 from 1 to 262144.
	SizeBuckets []float64
	// DurationBuckets are the send-latency histogram's upper bounds, in
	// seconds; default powers of 2 from 0.5ms to about 16s.
	DurationBuckets []float64
}

// SendMetrics holds the send histograms that InstrumentSend fills. It is a
// prometheus.Collector: register it next to the Collector.
type SendMetrics struct {
	size     *prom.HistogramVec
	duration *prom.HistogramVec
}

// NewSendMetrics returns the histograms send_batch_size and
// send_duration_seconds, each labelled result="ok" or result="error".
func NewSendMetrics(opts SendOpts) *SendMetrics {
	if opts.SizeBuckets == nil {
		opts.SizeBuckets = prom.ExponentialBuckets(1, 4, 10)
	}
	if opts.DurationBuckets == nil {
		opts.DurationBuckets = prom.ExponentialBuckets(0.0005, 2, 16)
	}
	return &SendMetrics{
		size: prom.NewHistogramVec(prom.HistogramOpts{
			Name:        opts.fqName("send_batch_size"),
			Help:        "Items per Send call.",
			ConstLabels: opts.ConstLabels,
			Buckets:     opts.SizeBuckets,
		}, []string{"result"}),
		duration: prom.NewHistogramVec(prom.HistogramOpts{
			Name:        opts.fqName("send_duration_seconds"),
			Help:        "Duration of Send calls.",
			ConstLabels: opts.ConstLabels,
			Buckets:     opts.DurationBuckets,
		}, []string{"result"}),
	}
}

// Describe sends the descriptors of both histograms.
func (m *SendMetrics) Describe(ch chan<- *prom.Desc) {
	m.size.Describe(ch)
	m.duration.Describe(ch)
}

// Collect sends both histograms.
func (m *SendMetrics) Collect(ch chan<- prom.Metric) {
	m.size.Collect(ch)
	m.duration.Collect(ch)
}

// InstrumentSend wraps send so that every call is observed in m: its batch
// length and its duration, under result="ok" or "error" (a panic counts as
// an error and is re-raised for the queue to recover). Pass the result as
// Config.Send. A nil send or m returns send unchanged.
func InstrumentSend[T any](send vinequeue.SendFunc[T], m *SendMetrics) vinequeue.SendFunc[T] {
	if send == nil || m == nil {
		return send
	}
	okSize, errSize := m.size.WithLabelValues("ok"), m.size.WithLabelValues("error")
	okDur, errDur := m.duration.WithLabelValues("ok"), m.duration.WithLabelValues("error")
	return func(ctx context.Context, batch []T) (err error) {
		start := time.Now()
		failed := true // until send returns nil: a panic leaves it true
		defer func() {
			d := time.Since(start).Seconds()
			if failed {
				errSize.Observe(float64(len(batch)))
				errDur.Observe(d)
			} else {
				okSize.Observe(float64(len(batch)))
				okDur.Observe(d)
			}
		}()
		err = send(ctx, batch)
		failed = err != nil
		return err
	}
}
