package benchmarks

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	kafkago "github.com/segmentio/kafka-go"
)

// The real job's other Kafka clients, each driven the way its
// documentation shows for asynchronous producing with delivery reports, as
// a user would write it without a queue in front. Settings that differ
// from the library's defaults are the ones needed for a like-for-like run:
// acks from all in-sync replicas (franz-go's default, contrib/kafka's
// setting) and murmur2 by key where the library has it.

// ackCounter counts delivery reports until every produced record has one.
type ackCounter struct {
	produced, acked, failed atomic.Int64
	firstErr                atomic.Pointer[error]

	mu   sync.Mutex
	want int64 // -1 until wait knows how many were produced
	done chan struct{}
}

func newAckCounter() *ackCounter { return &ackCounter{want: -1, done: make(chan struct{})} }

// report records the outcome of n records.
func (a *ackCounter) report(n int, err error) {
	if err != nil {
		a.failed.Add(int64(n))
		a.firstErr.CompareAndSwap(nil, &err)
	} else {
		a.acked.Add(int64(n))
	}
	a.check()
}

func (a *ackCounter) check() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.want >= 0 && a.acked.Load()+a.failed.Load() == a.want {
		select {
		case <-a.done:
		default:
			close(a.done)
		}
	}
}

// wait returns once every produced record was reported, or after timeout.
func (a *ackCounter) wait(timeout time.Duration) error {
	a.mu.Lock()
	a.want = a.produced.Load()
	a.mu.Unlock()
	a.check()
	select {
	case <-a.done:
	case <-time.After(timeout):
		return fmt.Errorf("after %v: %d of %d records acknowledged, %d failed", timeout, a.acked.Load(), a.produced.Load(), a.failed.Load())
	}
	if n := a.failed.Load(); n > 0 {
		return fmt.Errorf("%d records failed, the first: %w", n, *a.firstErr.Load())
	}
	return nil
}

const realJobAckTimeout = 5 * time.Minute

// saramaAsync is sarama's AsyncProducer with Return.Successes: one
// goroutine drains Successes and one Errors, as sarama requires. Defaults
// otherwise (sarama's hash partitioner, FNV-1a, is its default; no
// idempotence, since sarama's needs MaxOpenRequests 1; no linger: Flush
// settings zero send as fast as possible).
func saramaAsync() realJobContender {
	return realJobContender{name: "sarama", start: func(t *testing.T, addr string, _ int) (func([]byte, []byte) error, func() error) {
		cfg := sarama.NewConfig()
		cfg.Producer.Return.Successes = true
		cfg.Producer.RequiredAcks = sarama.WaitForAll
		p, err := sarama.NewAsyncProducer([]string{addr}, cfg)
		if err != nil {
			t.Fatalf("sarama against kfake: %v", err)
		}
		acks := newAckCounter()
		var readers sync.WaitGroup
		readers.Go(func() {
			for range p.Successes() {
				acks.report(1, nil)
			}
		})
		readers.Go(func() {
			for e := range p.Errors() {
				acks.report(1, e.Err)
			}
		})
		t.Cleanup(func() {
			p.AsyncClose()
			readers.Wait()
		})
		in := p.Input()
		call := func(key, value []byte) error {
			acks.produced.Add(1)
			in <- &sarama.ProducerMessage{Topic: realJobTopic, Key: sarama.ByteEncoder(key), Value: sarama.ByteEncoder(value)}
			return nil
		}
		return call, func() error { return acks.wait(realJobAckTimeout) }
	}}
}

// kafkaGoAsync is segmentio/kafka-go's Writer with Async and a Completion
// callback, its Murmur2Balancer and BatchTimeout 10ms (franz-go's linger;
// the default 1s would add up to a second to every run's tail). BatchSize
// stays at its default, 100 records per partition batch.
func kafkaGoAsync() realJobContender {
	return realJobContender{name: "kafka-go", start: func(t *testing.T, addr string, _ int) (func([]byte, []byte) error, func() error) {
		acks := newAckCounter()
		w := &kafkago.Writer{
			Addr:         kafkago.TCP(addr),
			Topic:        realJobTopic,
			Balancer:     &kafkago.Murmur2Balancer{},
			RequiredAcks: kafkago.RequireAll,
			Async:        true,
			BatchTimeout: 10 * time.Millisecond,
			Completion:   func(msgs []kafkago.Message, err error) { acks.report(len(msgs), err) },
		}
		t.Cleanup(func() { _ = w.Close() })
		ctx := context.Background()
		call := func(key, value []byte) error {
			acks.produced.Add(1)
			return w.WriteMessages(ctx, kafkago.Message{Key: key, Value: value})
		}
		return call, func() error { return acks.wait(realJobAckTimeout) }
	}}
}
