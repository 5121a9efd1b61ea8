package prometheus

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vineroute/vinequeue"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// statsText is the exposition Collector must produce for st (namespace
// vinequeue, no labels).
func statsText(st vinequeue.Stats) string {
	var b strings.Builder
	metric := func(name, kind, help string, v uint64) {
		fmt.Fprintf(&b, "# HELP vinequeue_%s %s\n# TYPE vinequeue_%s %s\nvinequeue_%s %d\n", name, help, name, kind, name, v)
	}
	metric("enqueued_total", "counter", "Items accepted by the queue.", st.Enqueued)
	metric("delivered_total", "counter", "Items in batches whose Send returned nil.", st.Delivered)
	metric("rejected_total", "counter", "Items refused at the call (ErrFull, ErrWALFull, ErrTooLarge, a codec error).", st.Rejected)
	metric("dropped_total", "counter", "Items given up on and handed to OnDrop (retries exhausted, Permanent, Stop deadline without a WAL).", st.Dropped)
	metric("spilled_total", "counter", "Items written to the WAL by the memory governor.", st.Spilled)
	metric("replayed_total", "counter", "Items read back from the WAL at start-up and handed to delivery.", st.Replayed)
	metric("send_retries_total", "counter", "Send calls that were retries.", st.Retries)
	metric("corrupt_records_total", "counter", "WAL records lost to corruption.", st.Corrupt)
	metric("soft_delays_total", "counter", "Slow-path delays applied at the soft memory level.", st.Delayed)
	metric("blocked_total", "counter", "Enqueue calls that waited at the hard memory level (Policy Block).", st.Blocked)
	metric("batches_total", "counter", "Send calls that returned nil.", st.Batches)
	metric("buffered_items", "gauge", "Items accepted and not yet delivered or dropped.", st.Buffered)
	metric("held_bytes", "gauge", "Bytes held by the queue, as accounted by SizeOf.", st.BytesHeld)
	metric("memory_level", "gauge", "Memory governor level: 0 normal, 1 soft, 2 hard.", uint64(st.Level))
	metric("target_batch_size", "gauge", "Current target batch size.", st.BatchSize)
	metric("wal_bytes", "gauge", "Bytes of the WAL's unacknowledged records on disk.", st.WALBytes)
	metric("left_on_disk_total", "counter", "Items Stop left in the WAL for the next start.", st.LeftOnDisk)
	metric("dead_lettered_total", "counter", "Items given up on and kept in the WAL's dead-letter log.", st.DeadLettered)
	metric("parked_total", "counter", "Items moved to the dead-letter log behind a dead letter of their key (ParkKeys).", st.Parked)
	metric("parked_items", "gauge", "Items parked now behind a dead letter of their key (ParkKeys).", st.ParkedItems)
	metric("parked_keys", "gauge", "Keys parked now behind a dead letter (ParkKeys).", st.ParkedKeys)
	metric("backlog_items", "gauge", "Items waiting for delivery, in memory and not yet replayed from the WAL.", st.Backlog.Items)
	metric("backlog_bytes", "gauge", "Bytes waiting for delivery, in memory plus the WAL.", st.Backlog.Bytes)
	metric("backlog_oldest_timestamp_seconds", "gauge", "When the oldest unacknowledged WAL record was written (Unix seconds; 0: none).", uint64(max(st.Backlog.Oldest.Unix(), 0)))
	metric("durable_through_timestamp_seconds", "gauge", "Every item accepted before this time is on disk, fsynced (Unix seconds; 0: nothing promised).", uint64(max(st.DurableThrough.Unix(), 0)))
	replaying := uint64(0)
	if st.Backlog.Replaying {
		replaying = 1
	}
	metric("replaying", "gauge", "1 while records found in the WAL at start-up are being delivered.", replaying)
	return b.String()
}

// leafFields counts the fields of t, those of nested structs (Backlog) one
// by one; a time.Time is one field.
func leafFields(t reflect.Type) int {
	n := 0
	for f := range t.Fields() {
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Time]() {
			n += leafFields(f.Type)
		} else {
			n++
		}
	}
	return n
}

// TestCollectorMapsEveryField gives every Stats field a distinct value and
// checks each lands in its own metric.
func TestCollectorMapsEveryField(t *testing.T) {
	st := vinequeue.Stats{
		Enqueued: 1, Delivered: 2, Rejected: 3, Dropped: 4, Spilled: 5, Replayed: 6,
		Retries: 7, Corrupt: 8, Delayed: 9, Blocked: 10, Batches: 11,
		Buffered: 12, BytesHeld: 13, Level: vinequeue.LevelHard, BatchSize: 15, WALBytes: 16,
		LeftOnDisk: 17, DeadLettered: 18,
		Backlog: vinequeue.Backlog{Items: 19, Bytes: 20, Oldest: time.Unix(21, 0), Replaying: true},
		Parked:  22, ParkedItems: 23, ParkedKeys: 24,
		DurableThrough: time.Unix(25, 0),
	}
	c := NewCollector(func() vinequeue.Stats { return st }, Opts{})
	if err := testutil.CollectAndCompare(c, strings.NewReader(statsText(st))); err != nil {
		t.Fatal(err)
	}
	// One metric per Stats field: a field added to Stats without a metric
	// fails here.
	if n, want := testutil.CollectAndCount(c), leafFields(reflect.TypeFor[vinequeue.Stats]()); n != want {
		t.Errorf("%d metrics for %d Stats fields", n, want)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestCollectorOptsAndRegistry(t *testing.T) {
	c := NewCollector(func() vinequeue.Stats { return vinequeue.Stats{Delivered: 5} }, Opts{
		Namespace: "app", Subsystem: "events", ConstLabels: prom.Labels{"queue": "orders"},
	})
	reg := prom.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	const want = `
# HELP app_events_delivered_total Items in batches whose Send returned nil.
# TYPE app_events_delivered_total counter
app_events_delivered_total{queue="orders"} 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "app_events_delivered_total"); err != nil {
		t.Fatal(err)
	}
	// Two queues in one registry differ by their labels.
	other := NewCollector(func() vinequeue.Stats { return vinequeue.Stats{} }, Opts{
		Namespace: "app", Subsystem: "events", ConstLabels: prom.Labels{"queue": "payments"},
	})
	if err := reg.Register(other); err != nil {
		t.Fatalf("second queue: %v", err)
	}
}

func TestCollectorNilStats(t *testing.T) {
	reg := prom.NewRegistry()
	reg.MustRegister(NewCollector(nil, Opts{}))
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "nil stats func") {
		t.Fatalf("Gather: %v, want the nil stats error", err)
	}
}

func TestInstrumentSend(t *testing.T) {
	m := NewSendMetrics(SendOpts{})
	errBusy := errors.New("busy")
	calls := 0
	send := InstrumentSend(func(_ context.Context, batch []int) error {
		calls++
		if calls == 2 {
			return errBusy
		}
		return nil
	}, m)
	for _, n := range []int{3, 10, 7} {
		err := send(context.Background(), make([]int, n))
		if (calls == 2) != errors.Is(err, errBusy) {
			t.Fatalf("call %d: err %v", calls, err)
		}
	}
	panicky := InstrumentSend(func(context.Context, []int) error { panic("boom") }, m)
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recovered %v, want the re-raised panic", r)
			}
		}()
		_ = panicky(context.Background(), make([]int, 2))
	}()

	const want = `
# HELP vinequeue_send_batch_size Items per Send call.
# TYPE vinequeue_send_batch_size histogram
vinequeue_send_batch_size_bucket{result="error",le="1"} 0
vinequeue_send_batch_size_bucket{result="error",le="4"} 1
vinequeue_send_batch_size_bucket{result="error",le="16"} 2
vinequeue_send_batch_size_bucket{result="error",le="64"} 2
vinequeue_send_batch_size_bucket{result="error",le="256"} 2
vinequeue_send_batch_size_bucket{result="error",le="1024"} 2
vinequeue_send_batch_size_bucket{result="error",le="4096"} 2
vinequeue_send_batch_size_bucket{result="error",le="16384"} 2
vinequeue_send_batch_size_bucket{result="error",le="65536"} 2
vinequeue_send_batch_size_bucket{result="error",le="262144"} 2
vinequeue_send_batch_size_bucket{result="error",le="+Inf"} 2
vinequeue_send_batch_size_sum{result="error"} 12
vinequeue_send_batch_size_count{result="error"} 2
vinequeue_send_batch_size_bucket{result="ok",le="1"} 0
vinequeue_send_batch_size_bucket{result="ok",le="4"} 1
vinequeue_send_batch_size_bucket{result="ok",le="16"} 2
vinequeue_send_batch_size_bucket{result="ok",le="64"} 2
vinequeue_send_batch_size_bucket{result="ok",le="256"} 2
vinequeue_send_batch_size_bucket{result="ok",le="1024"} 2
vinequeue_send_batch_size_bucket{result="ok",le="4096"} 2
vinequeue_send_batch_size_bucket{result="ok",le="16384"} 2
vinequeue_send_batch_size_bucket{result="ok",le="65536"} 2
vinequeue_send_batch_size_bucket{result="ok",le="262144"} 2
vinequeue_send_batch_size_bucket{result="ok",le="+Inf"} 2
vinequeue_send_batch_size_sum{result="ok"} 10
vinequeue_send_batch_size_count{result="ok"} 2
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want), "vinequeue_send_batch_size"); err != nil {
		t.Fatal(err)
	}
	// Durations are not asserted (tests never assert wall-clock time), only
	// that each call was observed once under its result.
	if n := testutil.CollectAndCount(m, "vinequeue_send_duration_seconds"); n != 2 {
		t.Errorf("%d duration series, want 2 (ok, error)", n)
	}
	if InstrumentSend[int](nil, m) != nil {
		t.Error("InstrumentSend(nil, m) wrapped a nil send")
	}
}

// TestMetricsEqualStatsAfterWorkload drives a real queue with a known
// workload (1000 items from 4 goroutines, the first Send failing once) and
// checks that the scraped metrics equal the queue's Stats, and the known
// values.
func TestMetricsEqualStatsAfterWorkload(t *testing.T) {
	m := NewSendMetrics(SendOpts{})
	var (
		mu        sync.Mutex
		delivered int
		failOnce  atomic.Bool
	)
	failOnce.Store(true)
	send := func(_ context.Context, batch []uint64) error {
		if failOnce.CompareAndSwap(true, false) {
			return errors.New("sink unavailable")
		}
		mu.Lock()
		delivered += len(batch)
		mu.Unlock()
		return nil
	}
	q, err := vinequeue.New(vinequeue.Config[uint64]{
		Send:          InstrumentSend(send, m),
		BatchSize:     100,
		FlushInterval: 10 * time.Millisecond,
		Retry:         vinequeue.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCollector(q.Stats, Opts{})
	reg := prom.NewPedanticRegistry()
	reg.MustRegister(c, m)

	const producers, each = 4, 250
	var wg sync.WaitGroup
	for g := range producers {
		wg.Go(func() {
			for i := range each {
				if err := q.Enqueue(uint64(g*each + i)); err != nil {
					t.Errorf("Enqueue: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	st := q.Stats()
	const total = producers * each
	if st.Enqueued != total || st.Delivered != total || st.Retries != 1 || st.Dropped != 0 || st.Buffered != 0 {
		t.Fatalf("stats %+v, want %d enqueued and delivered, 1 retry, nothing dropped or buffered", st, total)
	}
	if delivered != total {
		t.Fatalf("sink got %d items, want %d", delivered, total)
	}
	// The metrics equal Stats, field by field.
	if err := testutil.CollectAndCompare(c, strings.NewReader(statsText(st))); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint64{
		"vinequeue_enqueued_total":     total,
		"vinequeue_delivered_total":    total,
		"vinequeue_send_retries_total": 1,
		"vinequeue_dropped_total":      0,
		"vinequeue_batches_total":      st.Batches,
		"vinequeue_buffered_items":     0,
		"vinequeue_held_bytes":         0,
		"vinequeue_target_batch_size":  st.BatchSize,
	} {
		if got := testutil.ToFloat64(only{c, name}); got != float64(want) {
			t.Errorf("%s = %v, want %d", name, got, want)
		}
	}
	// The histograms saw every Send call: the delivered batches (ok) and
	// the one failure.
	sizes := gatherHistograms(t, reg, "vinequeue_send_batch_size")
	if ok := sizes["ok"]; ok.count != st.Batches || ok.sum != float64(total) {
		t.Errorf("ok batch sizes: %d calls, %v items; want %d calls (Stats.Batches), %d items", ok.count, ok.sum, st.Batches, total)
	}
	if e := sizes["error"]; e.count != 1 {
		t.Errorf("error batch sizes: %d calls, want 1", e.count)
	}
	durations := gatherHistograms(t, reg, "vinequeue_send_duration_seconds")
	if durations["ok"].count != st.Batches || durations["error"].count != 1 {
		t.Errorf("durations: %+v, want %d ok and 1 error", durations, st.Batches)
	}
}

// only narrows a collector to the metric called name, for ToFloat64.
type only struct {
	prom.Collector
	name string
}

func (o only) Collect(ch chan<- prom.Metric) {
	all := make(chan prom.Metric)
	go func() {
		o.Collector.Collect(all)
		close(all)
	}()
	for m := range all {
		if strings.Contains(m.Desc().String(), `fqName: "`+o.name+`"`) {
			ch <- m
		}
	}
}

type histogram struct {
	count uint64
	sum   float64
}

// gatherHistograms returns name's histograms by their result label.
func gatherHistograms(t *testing.T, g prom.Gatherer, name string) map[string]histogram {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]histogram)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var result string
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					result = l.GetValue()
				}
			}
			out[result] = histogram{m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()}
		}
	}
	return out
}
