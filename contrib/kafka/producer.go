package kafka

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/vineroute/vinequeue"
)

// ErrFatal marks a send error that retrying cannot fix: see the package
// documentation for which errors are fatal. Such errors are also wrapped in
// vinequeue.Permanent, so the queue sends the batch to OnDrop at once instead
// of re-sending it (and duplicating its good records) MaxAttempts times.
var ErrFatal = errors.New("kafka: fatal produce error")

// IsFatal reports whether err, returned by a send function of this package,
// is one that retrying cannot fix. It is errors.Is(err, ErrFatal).
func IsFatal(err error) bool { return errors.Is(err, ErrFatal) }

// Record is one Kafka record. Key picks the partition (murmur2, as Kafka's
// Java client does); a nil Key spreads records over partitions. Its Kafka
// timestamp is the time the send handed its batch to the client, to the
// millisecond: one clock reading for the whole batch (for each chunk of
// MaxBufferedRecords, in a batch larger than that).
type Record struct {
	Key     []byte
	Value   []byte
	Headers []kgo.RecordHeader
}

// DefaultLinger is how long, by default, the client holds a partition's
// records for more before it sends a produce request, unless the sends
// end the linger early, as they do once half of the queue's Workers have
// handed over their batches (see Config.ClientOpts).
const DefaultLinger = 5 * time.Millisecond

// Config configures a Producer. Only Topic and a seed broker (in
// ClientOpts) are required; every other field has a default that suits a
// queue in front of the Producer.
type Config struct {
	// Topic receives every record. Required.
	Topic string

	// ClientOpts are franz-go client options: at least kgo.SeedBrokers, and
	// TLS, SASL, logging, compression and so on as needed.
	//
	// Defaults that ClientOpts may override:
	// kgo.ProducerLinger(DefaultLinger). The client has one produce
	// request in flight per broker (the idempotent producer allows no
	// more), so how full requests are depends on when the next one
	// leaves. With no linger it leaves as soon as a send's first record
	// is buffered, carrying a fraction of one batch. Instead the client
	// lingers, and the sends end the linger early (a kick) in two groups
	// that take turns: a send that has handed over its whole batch kicks
	// when the sends parked (waiting for acks) since the last kick are
	// half of the most sends the Producer has had at once — the queue's
	// Workers, once it has been busy — or when every send is parked and
	// none of them waits for an earlier kick's answer.
	// While one group's request is encoded, written and answered and its
	// promises run, the other group hands over its records, and the
	// client sends those as soon as the answer comes, so the client's
	// work and the sends' overlap on different cores. A request thus
	// carries about half of the Workers' batches: more Workers, fuller
	// requests: with 1000-record batches, some 3,500 records per
	// request at 8 Workers, 6,000 at 16 and 12,000 at 32. Where the
	// brokers' cost per request matters, use 16 Workers or more (they
	// cost the queue nothing but the memory of their batches, which
	// MaxBufferedRecords must hold). The linger delays
	// records only while fewer than half of the Workers are busy. A kick
	// is a Flush(ctx) with ctx already ended, which a client logger at
	// info level shows as "flushing". kgo.ProducerLinger(0) turns both
	// off; a linger longer than the default changes only the idle case.
	//
	// The client's request limits keep their defaults:
	// kgo.ProducerBatchMaxBytes (about 1 MB per partition and request)
	// and kgo.BrokerMaxWriteBytes (100 MiB per request) are far above what
	// a request of the Workers' batches holds for records of a few
	// hundred bytes; raise the first only for larger records, where a
	// partition's share of a request could exceed it and be split.
	//
	// Options applied after ClientOpts, which the guarantees rest on and
	// which therefore cannot be overridden: kgo.DefaultProduceTopic(Topic),
	// kgo.RequiredAcks(kgo.AllISRAcks()),
	// kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)) (murmur2 by key,
	// as Kafka's Java client and librdkafka's murmur2 partitioner do),
	// kgo.MaxBufferedRecords (see MaxBufferedRecords),
	// kgo.RecordDeliveryTimeout (see DeliveryTimeout) and no bound on
	// kgo.RecordRetries (see the package doc, Order and duplicates).
	// NewProducer refuses kgo.DisableIdempotentWrite, and
	// kgo.ManualFlushing (nothing would ever flush).
	ClientOpts []kgo.Opt

	// DeliveryTimeout bounds how long the client retries a record whose
	// produce requests fail with retriable errors before the record fails
	// (retryably, wrapping kgo.ErrRecordTimeout) and the queue takes the
	// retrying over with its own backoff and Config.Retry.MaxAttempts:
	// kgo.RecordDeliveryTimeout. Default 30s; at least 1s (the order
	// argument in the package doc needs it far above the time a send takes
	// to buffer its batch); negative means no limit other than the send's
	// context.
	//
	// It does not bound a send: once a record's produce request has been
	// written, the client gives it up only after a broker answers for its
	// partition, whatever DeliveryTimeout says. A connection that fails
	// meanwhile (a broker gone) does not end the wait: the request may
	// have been written to the log, so the idempotent producer resends the
	// record until some broker answers, or the Producer is closed (see
	// Cancellation in the package doc; kgo.AllowIdempotentProduceCancellation
	// in ClientOpts lets the client give such records up, at the price of
	// duplicates it can no longer remove). The send's context bounds the
	// send. Lower DeliveryTimeout to
	// hand a failing partition to the queue's retries sooner; raise it (or
	// make it negative) to let the client ride out a long leader election
	// without the queue seeing errors.
	DeliveryTimeout time.Duration

	// MaxBufferedRecords bounds the records the Producer has handed to the
	// client and not yet seen acknowledged or failed, over all concurrent
	// sends: a send waits (within its context) for room for its whole batch
	// before producing any of it, so a batch is never split by a full
	// buffer; a batch larger than this is produced in chunks of this size,
	// each after the previous one is acknowledged. Default 1 << 20. The
	// memory is the queue's items, which the queue holds anyway; lower it
	// only to bound what a stuck broker keeps in the client after sends
	// gave up on it (see Cancellation in the package doc). To have several
	// batches in flight at once (Config.Workers > 1 on the queue), it must
	// hold Workers batches.
	MaxBufferedRecords int
}

// Producer produces queue batches to one Kafka topic. Create it with
// NewProducer; it is safe for concurrent use.
//
// A send hands each record of its batch to the client (kgo.Client.Produce)
// with a promise that counts it, and waits for its own records' promises
// only: there is no flush, so sends from several queue Workers are in
// flight together and the client packs their records into shared produce
// requests. Sends hand their records over one at a time (a send waits for
// the one handing over before it, within its context); they wait for their
// acks together.
type Producer struct {
	client  *kgo.Client
	topic   string
	chunk   int // records per wait at most: Config.MaxBufferedRecords
	buffers slots
	calls   sync.Pool // of *call

	// lingers is whether the client holds records back (linger > 0),
	// and so needs the sends to kick (sendGate.park says when).
	lingers bool
	sends   sendGate
	feeder  chan struct{}   // 1 slot: held by the one send handing records to the client
	done    context.Context // already cancelled: Flush with it only stops the lingers
}

// NewProducer creates a Producer and its franz-go client. The client
// connects lazily: a broker that is down shows up as send errors, not here.
func NewProducer(cfg Config) (*Producer, error) {
	if cfg.Topic == "" {
		return nil, fmt.Errorf("%w: kafka.Config.Topic is empty", vinequeue.ErrInvalidConfig)
	}
	if cfg.DeliveryTimeout > 0 && cfg.DeliveryTimeout < time.Second {
		return nil, fmt.Errorf("%w: kafka.Config.DeliveryTimeout %v is below 1s", vinequeue.ErrInvalidConfig, cfg.DeliveryTimeout)
	}
	if cfg.MaxBufferedRecords < 0 || cfg.MaxBufferedRecords > 1<<40 {
		return nil, fmt.Errorf("%w: kafka.Config.MaxBufferedRecords %d is outside [0, 2^40]", vinequeue.ErrInvalidConfig, cfg.MaxBufferedRecords)
	}
	if cfg.DeliveryTimeout == 0 {
		cfg.DeliveryTimeout = 30 * time.Second
	}
	if cfg.MaxBufferedRecords == 0 {
		cfg.MaxBufferedRecords = 1 << 20
	}
	opts := make([]kgo.Opt, 0, len(cfg.ClientOpts)+8)
	opts = append(opts, kgo.ProducerLinger(DefaultLinger))
	opts = append(opts, cfg.ClientOpts...)
	opts = append(opts,
		// The slots bound what is buffered, and a send takes room for
		// its whole batch first, so Produce never blocks half way through
		// a batch (the order argument of the package doc needs that).
		// The client's own limit, which would block, is kept out of the
		// way: its count can lag the promises by a moment.
		kgo.MaxBufferedRecords(2*cfg.MaxBufferedRecords),
		kgo.DefaultProduceTopic(cfg.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.RecordRetries(math.MaxInt64),
	)
	if cfg.DeliveryTimeout > 0 {
		opts = append(opts, kgo.RecordDeliveryTimeout(cfg.DeliveryTimeout))
	} else {
		opts = append(opts, kgo.RecordDeliveryTimeout(0))
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: kafka: %w", vinequeue.ErrInvalidConfig, err)
	}
	if disabled, _ := client.OptValue(kgo.DisableIdempotentWrite).(bool); disabled {
		client.Close()
		return nil, fmt.Errorf("%w: kafka: kgo.DisableIdempotentWrite is not allowed: retries could reorder or duplicate records", vinequeue.ErrInvalidConfig)
	}
	if manual, _ := client.OptValue(kgo.ManualFlushing).(bool); manual {
		client.Close()
		return nil, fmt.Errorf("%w: kafka: kgo.ManualFlushing is not allowed: the Producer never flushes", vinequeue.ErrInvalidConfig)
	}
	linger, _ := client.OptValue(kgo.ProducerLinger).(time.Duration)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	return &Producer{
		client:  client,
		topic:   cfg.Topic,
		chunk:   cfg.MaxBufferedRecords,
		buffers: slots{free: cfg.MaxBufferedRecords},
		lingers: linger > 0,
		feeder:  make(chan struct{}, 1),
		done:    done,
	}, nil
}

// Close closes the client: records still in it (those of sends that
// returned because their context ended) fail, and sends still running fail
// with a fatal error. Call it after the queue's Stop has returned.
func (p *Producer) Close() { p.client.Close() }

// SendValues is a vinequeue.SendFunc[[]byte]: each item becomes the value of
// a record without key. It returns once every record is acknowledged.
func (p *Producer) SendValues(ctx context.Context, batch [][]byte) error {
	return produce(p, ctx, batch, fillValues)
}

// SendRecords is a vinequeue.SendFunc[Record]. It returns once every record
// is acknowledged.
func (p *Producer) SendRecords(ctx context.Context, batch []Record) error {
	return produce(p, ctx, batch, fillRecords)
}

// SendFuncOf returns a vinequeue.SendFunc for items of a caller's type,
// turned into records by encode, which carries the item's key (so that
// per-key order holds, encode must derive the key from the item, the way
// the queue key given to EnqueueKey is). encode may return slices that
// alias the item's memory; see Cancellation in the package doc for how
// long the client may read them. An encode error fails the batch before
// any record is produced, and is fatal.
func SendFuncOf[T any](p *Producer, encode func(v T) (Record, error)) vinequeue.SendFunc[T] {
	fill := func(recs []kgo.Record, items []T, topic string, now time.Time) (int, error) {
		for i, v := range items {
			r, err := encode(v)
			if err != nil {
				return i, err
			}
			setRecord(&recs[i], topic, now, r.Key, r.Value, r.Headers)
		}
		return len(items), nil
	}
	return func(ctx context.Context, batch []T) error {
		return produce(p, ctx, batch, fill)
	}
}

// A fill function sets recs[i] from items[i], all of them, or returns the
// index of the item that could not be encoded and why. The two built in
// are plain loops: a call through encode per record was a few percent of
// a send's CPU.
type fillFunc[T any] func(recs []kgo.Record, items []T, topic string, now time.Time) (int, error)

func fillRecords(recs []kgo.Record, items []Record, topic string, now time.Time) (int, error) {
	for i := range items {
		r := &items[i]
		setRecord(&recs[i], topic, now, r.Key, r.Value, r.Headers)
	}
	return len(items), nil
}

func fillValues(recs []kgo.Record, items [][]byte, topic string, now time.Time) (int, error) {
	for i, v := range items {
		setRecord(&recs[i], topic, now, nil, v, nil)
	}
	return len(items), nil
}

// setRecord fills a cleared kgo record (see putCall).
func setRecord(kr *kgo.Record, topic string, now time.Time, key, value []byte, headers []kgo.RecordHeader) {
	kr.Topic = topic
	kr.Key, kr.Value, kr.Headers = key, value, headers
	kr.Timestamp = now
}

func produce[T any](p *Producer, ctx context.Context, batch []T, fill fillFunc[T]) error {
	if len(batch) == 0 {
		return nil
	}
	for start := 0; start < len(batch); start += p.chunk {
		part := batch[start:min(start+p.chunk, len(batch))]
		c := p.getCall(len(part))
		// One clock read per chunk rather than one per record (the
		// client stamps a record without a timestamp with time.Now, a
		// tenth of a send's CPU on some machines), truncated to the
		// millisecond as the client does.
		now := time.Now().Truncate(time.Millisecond)
		if i, err := fill(c.recs, part, p.topic, now); err != nil {
			p.putCall(c)
			return vinequeue.Permanent(fmt.Errorf("%w: kafka: encoding item %d of %d: %w", ErrFatal, start+i, len(batch), err))
		}
		res, finished := p.produceChunk(ctx, c)
		if finished {
			p.putCall(c)
		}
		switch {
		case res.failed == 0:
			continue
		case res.fatal != nil:
			return vinequeue.Permanent(fmt.Errorf("%w: kafka: %d of %d records not acknowledged by topic %q: %w", ErrFatal, len(batch)-start-res.acked, len(batch), p.topic, res.fatal))
		default:
			// Later chunks are not produced: a failed record must not be
			// followed by acknowledged ones of its key.
			return fmt.Errorf("kafka: %d of %d records not acknowledged by topic %q: %w", len(batch)-start-res.acked, len(batch), p.topic, res.first)
		}
	}
	return nil
}

// call is one chunk of one send: its kgo records and what their promises
// reported. Calls are pooled, except one that its send gave up waiting for
// (the client still holds its records), which the garbage collector takes
// once the client is done with it.
type call struct {
	recs    []kgo.Record
	promise func(*kgo.Record, error) // c.onPromise, bound once: no allocation per send
	release func(int)                // returns room to the Producer's slots
	done    chan struct{}            // receives one token when the last promise ran

	// The promises run on the client's goroutines, one per record, and
	// nearly all of them succeed: a success costs one atomic add, and
	// only a failure takes mu, under which it also counts itself out of
	// left, so that a reader holding mu sees failed and left agree (the
	// records acknowledged are the rest). The send reads them once left is
	// 0 (done orders that read after every promise), or at its context's
	// end.
	left atomic.Int64 // promises still to come

	mu  sync.Mutex
	res chunkResult // failed, first and fatal; acked is worked out by result
}

type chunkResult struct {
	acked, failed int
	first, fatal  error // the first error, and the first fatal one
}

func (c *call) onPromise(_ *kgo.Record, err error) {
	var left int64
	if err == nil {
		left = c.left.Add(-1)
	} else {
		c.mu.Lock()
		c.res.failed++
		if c.res.first == nil {
			c.res.first = err
		}
		if c.res.fatal == nil && isFatal(err) {
			c.res.fatal = err
		}
		left = c.left.Add(-1)
		c.mu.Unlock()
	}
	if left == 0 {
		// The client is done with the records: their room is free even
		// if the send stopped waiting long ago.
		c.release(len(c.recs))
		c.done <- struct{}{} // buffered, one token per use: never blocks
	}
}

// result is what the promises reported so far. Successes still running
// may be counted or not, but acked + failed never exceeds the records.
func (c *call) result() chunkResult {
	c.mu.Lock()
	res := c.res
	left := c.left.Load()
	c.mu.Unlock()
	res.acked = len(c.recs) - res.failed - int(left)
	return res
}

// produceChunk hands c's records to the client and waits for their
// promises, or for ctx's end. finished reports whether every promise ran
// (c may be reused); if not, the records not yet acknowledged count as
// failed with ctx's error, and c belongs to the client's promises.
func (p *Producer) produceChunk(ctx context.Context, c *call) (res chunkResult, finished bool) {
	n := len(c.recs)
	if err := p.buffers.acquire(ctx, n); err != nil {
		return chunkResult{failed: n, first: err}, true
	}
	c.left.Store(int64(n))
	p.sends.enter()
	if !p.feed(ctx, c) {
		p.sends.leave(0, false)
		p.buffers.release(n)
		return chunkResult{failed: n, first: fmt.Errorf("waiting to hand over %d records: %w", n, ctx.Err())}, true
	}
	kick, cover := p.sends.park()
	defer p.sends.leave(cover, true)
	if kick && p.lingers {
		p.kick()
	}
	select {
	case <-c.done:
		return c.result(), true
	case <-ctx.Done():
	}
	select {
	case <-c.done: // all promises ran meanwhile: keep their answer
		return c.result(), true
	default:
	}
	res = c.result()
	inFlight := n - res.acked - res.failed
	res.failed = n - res.acked
	if res.first == nil {
		res.first = fmt.Errorf("%d records still in flight: %w", inFlight, ctx.Err())
	} else {
		res.first = fmt.Errorf("%w; %d records still in flight: %w", res.first, inFlight, ctx.Err())
	}
	return res, false
}

// feed hands c's records to the client, one send at a time: it waits for
// the feeder slot, within ctx, and reports false, having handed over
// nothing, if ctx ends first. Sends hand over their records one after the
// other because concurrent ones gain nothing: the client takes a
// producer-wide lock and a topic-wide one for each record (the sticky
// partitioner holds the topic's across the buffering), so their Produce
// calls run one at a time anyway, and running them from several cores only
// moves those locks' cache lines between the cores at every record. Worse,
// a feeder descheduled while it holds one of them (the machine is busy)
// leaves the others spinning and parking on it: with 8 and 32 concurrent
// sends on a loaded 2-core machine, CPU per record spread over ±34 % and
// ±36 % run to run against ±4 % with one feeder (BenchmarkRealJobSend in
// benchmarks). A send waiting here parks once on a channel instead.
// The slot is held while the records are handed over only, never while a
// send waits for its acks, so sends still have their records in flight
// together.
func (p *Producer) feed(ctx context.Context, c *call) bool {
	select {
	case p.feeder <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	for i := range c.recs {
		// ctx lets the client fail the records not yet written to a
		// connection when it next looks at their partition; once
		// written, the client waits for the broker's answer whatever
		// ctx says (see Cancellation in the package doc).
		p.client.Produce(ctx, &c.recs[i], c.promise)
	}
	<-p.feeder
	return true
}

// kick makes the client send what it holds now instead of at the end of
// its linger (sendGate.park says when). Flush with a context that has
// already ended does exactly that: it stops every partition's linger and
// starts the client's drain, then returns the context's error at once
// instead of waiting for the acks. If a produce request is in flight, the
// drain waits for its answer and then sends at once everything buffered:
// without the kick, records buffered while a request was in flight would
// wait out their linger after its answer.
func (p *Producer) kick() { _ = p.client.Flush(p.done) }

// sendGate counts the sends that are in the client: active ones have
// taken their room, parked ones have also handed over all their records
// and only wait for acks. peak is the most sends ever active at once: the
// queue's Workers, once the queue has been busy.
//
// It splits the sends into two groups that take turns: a kick sends on
// their way the records of the sends parked since the previous kick once
// they are half of peak, so that while one group's produce request is
// encoded, written and answered, and its promises run, the other group
// hands over its records; the client sends those as soon as the answer
// comes. With one request in flight per broker (the idempotent producer),
// one group per request would leave the cores idle in turn: the sends'
// handover, then the client's request encoding and promises, then the
// handover again. Each request then carries about half the Workers'
// batches.
type sendGate struct {
	mu                   sync.Mutex
	active, parked, peak int
	// waiting counts the parked sends that no kick has sent on their way
	// yet; epoch numbers the kicks, so that a send knows whether a kick
	// came after it parked.
	waiting int
	epoch   uint64
}

func (g *sendGate) enter() {
	g.mu.Lock()
	g.active++
	g.peak = max(g.peak, g.active)
	g.mu.Unlock()
}

// park marks one active send parked. kick reports whether the caller
// should kick: the sends parked since the last kick are half of peak (a
// group); or every send is now parked, as many as ever were active at
// once, and none of them waits for a kick's request, so that nothing more
// can reach the client, and no answer can come, before this kick. Not
// when some parked sends wait for a kick's answer: those come back with
// new batches and complete this group; kicking for each send that parks
// meanwhile would send a request per send. With fewer sends in progress
// than peak, and fewer than half of peak parked, the linger decides.
// cover is the number of the kick that sends this send's records (this
// one or a later one), for leave.
func (g *sendGate) park() (kick bool, cover uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.parked++
	g.waiting++
	cover = g.epoch + 1
	covered := g.parked - g.waiting // parked, their records sent on by a kick
	if 2*g.waiting >= g.peak || g.parked == g.active && g.active == g.peak && covered == 0 {
		g.epoch = cover
		g.waiting = 0
		return true, cover
	}
	return false, cover
}

// leave ends an active send: a parked one with the cover park gave it, or
// one whose context ended before it handed anything to the client (parked
// false). Such a send was counted active, so the others parked meanwhile
// may not have kicked for it; their records then leave at the end of the
// linger, which happens only at Stop's deadline.
func (g *sendGate) leave(cover uint64, parked bool) {
	g.mu.Lock()
	g.active--
	if parked {
		g.parked--
		if cover > g.epoch {
			// No kick sent its records: the linger did, or its context
			// ended.
			g.waiting--
		}
	}
	g.mu.Unlock()
}

func (p *Producer) getCall(n int) *call {
	c, _ := p.calls.Get().(*call)
	if c == nil {
		c = &call{done: make(chan struct{}, 1), release: p.buffers.release}
		c.promise = c.onPromise
	}
	if cap(c.recs) < n {
		c.recs = make([]kgo.Record, n)
	}
	c.recs = c.recs[:n]
	return c
}

// putCall clears the records before pooling them, so that the pool keeps no
// item memory alive and kgo's per-record state does not leak into the next
// send.
func (p *Producer) putCall(c *call) {
	clear(c.recs)
	c.res = chunkResult{}
	p.calls.Put(c)
}

// isFatal classifies one record's produce error; see the package doc.
func isFatal(err error) bool {
	if errors.Is(err, kgo.ErrClientClosed) {
		return true
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return !ke.Retriable
	}
	// Timeouts, exhausted client retries, cancelled contexts, connection
	// errors: the cluster may be back by the next attempt.
	return false
}

// slots is a counting semaphore over buffered records.
type slots struct {
	mu   sync.Mutex
	free int
	wake chan struct{} // closed and replaced at each release; nil: no waiter
}

func (s *slots) acquire(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		if s.free >= n {
			s.free -= n
			s.mu.Unlock()
			return nil
		}
		if s.wake == nil {
			s.wake = make(chan struct{})
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *slots) release(n int) {
	s.mu.Lock()
	s.free += n
	if s.wake != nil {
		close(s.wake)
		s.wake = nil
	}
	s.mu.Unlock()
}

// QueueKey is vinequeue.KeyOf for a record key held as bytes, without
// copying it: the queue key for EnqueueKey that goes with the record. Records
// with equal keys get equal queue keys, so the queue keeps their order up to
// the Producer, and the partitioner keeps it from there. QueueKey(b) and
// vinequeue.KeyOf(string(b)) are equal, and stable across processes and
// versions.
func QueueKey(recordKey []byte) uint64 {
	// KeyOf only reads the string while it runs.
	return vinequeue.KeyOf(unsafe.String(unsafe.SliceData(recordKey), len(recordKey)))
}
