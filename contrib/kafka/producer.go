package kafka

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

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
// Java client does); a nil Key spreads records over partitions.
type Record struct {
	Key     []byte
	Value   []byte
	Headers []kgo.RecordHeader
}

// Config configures a Producer.
type Config struct {
	// Topic receives every record. Required.
	Topic string

	// ClientOpts are franz-go client options: at least kgo.SeedBrokers, and
	// TLS, SASL, logging and so on as needed. The options that the
	// guarantees rest on are applied after these and cannot be overridden:
	// kgo.DefaultProduceTopic(Topic), kgo.RequiredAcks(kgo.AllISRAcks()),
	// kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	// kgo.ManualFlushing(), kgo.MaxBufferedRecords (see MaxBufferedRecords),
	// kgo.RecordDeliveryTimeout (see DeliveryTimeout) and no bound on
	// kgo.RecordRetries (see the package doc, Order and duplicates).
	// NewProducer refuses kgo.DisableIdempotentWrite.
	ClientOpts []kgo.Opt

	// DeliveryTimeout bounds how long the client retries a record whose
	// produce requests fail with retriable errors before its send fails
	// (retryably) and the queue takes the retrying over:
	// kgo.RecordDeliveryTimeout. Default 30s, at least 1s (the order
	// argument in the package doc needs it far above the time a send takes
	// to buffer its batch); negative means no limit other than the send's
	// context.
	DeliveryTimeout time.Duration

	// MaxBufferedRecords bounds the records the Producer holds at once,
	// over all concurrent sends: a send waits (within its context) for room
	// for its batch, and a batch larger than this is produced in chunks of
	// this size, one after the other. Default 1 << 20; the memory is the
	// queue's items, which the queue holds anyway.
	MaxBufferedRecords int
}

// Producer produces queue batches to one Kafka topic. Create it with
// NewProducer; it is safe for concurrent use.
type Producer struct {
	client  *kgo.Client
	topic   string
	chunk   int // records per flush at most: Config.MaxBufferedRecords
	buffers slots
	recs    sync.Pool // of *recordBuf

	// gate keeps flushes out of a send's buffering: the client flushes only
	// when told (kgo.ManualFlushing), sends buffer under the read lock and
	// flush under the write lock. Together with buffering that never blocks
	// (buffers is taken first) it keeps a send's records close together in
	// the client, which the order argument of the package doc relies on.
	// Concurrent sends share flushes (a flush carries every send's buffered
	// records), like a group commit.
	gate sync.RWMutex
}

// recordBuf is the per-send scratch space: the kgo records of one batch and
// pointers to them. Pooled, since a send would otherwise allocate a record
// per item.
type recordBuf struct {
	recs []kgo.Record
	ptrs []*kgo.Record
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
	opts := append([]kgo.Opt(nil), cfg.ClientOpts...)
	opts = append(opts,
		kgo.ManualFlushing(),
		// The slots bound what is buffered; the client's own limit, which
		// fails records rather than blocking under ManualFlushing, is kept
		// out of the way (its count can lag the promises by a moment).
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
	return &Producer{
		client:  client,
		topic:   cfg.Topic,
		chunk:   cfg.MaxBufferedRecords,
		buffers: slots{free: cfg.MaxBufferedRecords},
	}, nil
}

// Close closes the client. Sends still running fail with a fatal error; call
// it after the queue's Stop has returned.
func (p *Producer) Close() { p.client.Close() }

// SendValues is a vinequeue.SendFunc[[]byte]: each item becomes the value of
// a record without key. It returns once every record is acknowledged.
func (p *Producer) SendValues(ctx context.Context, batch [][]byte) error {
	return produce(p, ctx, batch, func(v []byte) (Record, error) { return Record{Value: v}, nil })
}

// SendRecords is a vinequeue.SendFunc[Record]. It returns once every record
// is acknowledged.
func (p *Producer) SendRecords(ctx context.Context, batch []Record) error {
	return produce(p, ctx, batch, func(r Record) (Record, error) { return r, nil })
}

// SendFuncOf returns a vinequeue.SendFunc for items of a caller's type,
// turned into records by encode, which carries the item's key (so that
// per-key order holds, encode must derive the key from the item, the way
// the queue key given to EnqueueKey is). encode may return slices that
// alias the item: they are only read until the send returns. An encode
// error fails the batch before any record is produced, and is fatal.
func SendFuncOf[T any](p *Producer, encode func(v T) (Record, error)) vinequeue.SendFunc[T] {
	return func(ctx context.Context, batch []T) error {
		return produce(p, ctx, batch, encode)
	}
}

func produce[T any](p *Producer, ctx context.Context, batch []T, encode func(T) (Record, error)) error {
	if len(batch) == 0 {
		return nil
	}
	buf := p.getBuf(len(batch))
	defer p.putBuf(buf)
	for i, v := range batch {
		r, err := encode(v)
		if err != nil {
			return vinequeue.Permanent(fmt.Errorf("%w: kafka: encoding item %d of %d: %w", ErrFatal, i, len(batch), err))
		}
		kr := &buf.recs[i]
		kr.Topic = p.topic
		kr.Key, kr.Value, kr.Headers = r.Key, r.Value, r.Headers
		buf.ptrs[i] = kr
	}
	for start := 0; start < len(batch); start += p.chunk {
		res := p.produceChunk(ctx, buf.ptrs[start:min(start+p.chunk, len(batch))])
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

type chunkResult struct {
	acked, failed int
	first, fatal  error // the first error, and the first fatal one
}

// produceChunk buffers recs, flushes, and waits for every promise: the
// records are the caller's memory, so none may still be in the client when
// it returns.
func (p *Producer) produceChunk(ctx context.Context, recs []*kgo.Record) chunkResult {
	if err := p.buffers.acquire(ctx, len(recs)); err != nil {
		return chunkResult{failed: len(recs), first: err}
	}
	defer p.buffers.release(len(recs))

	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		res chunkResult
	)
	wg.Add(len(recs))
	promise := func(_ *kgo.Record, err error) {
		mu.Lock()
		switch {
		case err == nil:
			res.acked++
		default:
			res.failed++
			if res.first == nil {
				res.first = err
			}
			if res.fatal == nil && isFatal(err) {
				res.fatal = err
			}
		}
		mu.Unlock()
		wg.Done()
	}
	p.gate.RLock()
	for _, r := range recs {
		p.client.Produce(ctx, r, promise)
	}
	p.gate.RUnlock()

	p.gate.Lock()
	// The flush ignores ctx's end on purpose: a flush cut short leaves
	// records buffered that nothing would send or fail under manual
	// flushing, and the caller's memory with them. Once ctx ends the
	// records not yet sent fail promptly (Produce was given ctx), and the
	// ones in flight finish with their responses, bounded by the request
	// timeouts, so the flush still ends.
	_ = p.client.Flush(context.WithoutCancel(ctx))
	p.gate.Unlock()
	wg.Wait()
	return res
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

func (p *Producer) getBuf(n int) *recordBuf {
	buf, _ := p.recs.Get().(*recordBuf)
	if buf == nil {
		buf = new(recordBuf)
	}
	if cap(buf.recs) < n {
		buf.recs = make([]kgo.Record, n)
		buf.ptrs = make([]*kgo.Record, n)
	}
	buf.recs, buf.ptrs = buf.recs[:n], buf.ptrs[:n]
	return buf
}

// putBuf clears the records before pooling them, so that the pool keeps no
// item memory alive (the queue reuses it) and kgo's per-record state does not
// leak into the next send.
func (p *Producer) putBuf(buf *recordBuf) {
	clear(buf.recs)
	clear(buf.ptrs)
	p.recs.Put(buf)
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

// QueueKey maps a record key to a queue key for EnqueueKey: records with
// equal keys get equal queue keys, so the queue keeps their order up to the
// Producer, and the partitioner keeps it from there. It is 64-bit FNV-1a,
// stable across processes and versions.
func QueueKey(recordKey []byte) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for _, c := range recordKey {
		h ^= uint64(c)
		h *= prime64
	}
	return h
}
