package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/vineroute/vinequeue"
	"go.uber.org/goleak"
)

// Every test closes its clients and clusters; goleak checks that nothing of
// franz-go or kfake outlives them (VerifyTestMain retries for a while, which
// covers goroutines that are winding down after Close returned).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testTopic      = "events"
	testPartitions = 4
)

// newCluster starts an in-process Kafka on 127.0.0.1 with testTopic.
func newCluster(t testing.TB) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(testPartitions, testTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newProducer(t testing.TB, c *kfake.Cluster, cfg Config) *Producer {
	t.Helper()
	cfg.Topic = testTopic
	cfg.ClientOpts = append(cfg.ClientOpts,
		kgo.SeedBrokers(c.ListenAddrs()...),
		// Injected errors make the client back off and refresh metadata;
		// keep those waits short so the tests stay quick.
		kgo.RetryBackoffFn(func(int) time.Duration { return 5 * time.Millisecond }),
		kgo.MetadataMinAge(10*time.Millisecond),
	)
	p, err := NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// workload is keys×perKey records, value "key:seq", interleaved by key the
// way a queue's batches interleave them.
func workload(keys, perKey int) []Record {
	recs := make([]Record, 0, keys*perKey)
	for seq := range perKey {
		for k := range keys {
			recs = append(recs, Record{
				Key:   fmt.Appendf(nil, "key-%d", k),
				Value: fmt.Appendf(nil, "key-%d:%d", k, seq),
			})
		}
	}
	return recs
}

// sendLikeQueue plays a queue's batcher: batches in order, each retried until
// it succeeds, the next one only after. It returns the errors of the failed
// attempts.
func sendLikeQueue(t *testing.T, send vinequeue.SendFunc[Record], recs []Record, batchSize int) []error {
	return sendLikeQueueNotify(t, send, recs, batchSize, func(error) {})
}

// sendLikeQueueNotify is sendLikeQueue calling onFail after each failed attempt.
func sendLikeQueueNotify(t *testing.T, send vinequeue.SendFunc[Record], recs []Record, batchSize int, onFail func(error)) []error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var failures []error
	for start := 0; start < len(recs); start += batchSize {
		batch := recs[start:min(start+batchSize, len(recs))]
		for attempt := 1; ; attempt++ {
			err := send(ctx, batch)
			if err == nil {
				break
			}
			failures = append(failures, err)
			onFail(err)
			if attempt == 10 {
				t.Fatalf("batch at %d still failing after %d attempts: %v", start, attempt, err)
			}
		}
	}
	return failures
}

// consumeAll reads testTopic from the start up to its end offsets at the
// time of the call, so duplicates written by retries are read too.
func consumeAll(t *testing.T, c *kfake.Cluster) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.ConsumeTopics(testTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = testTopic
	for p := range int32(testPartitions) {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p
		rp.Timestamp = -1 // latest: the end offset
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("list offsets: %v", err)
	}
	end := make(map[int32]int64)
	total := int64(0)
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				t.Fatalf("list offsets, partition %d: %v", rp.Partition, err)
			}
			end[rp.Partition] = rp.Offset
			total += rp.Offset
		}
	}

	var recs []*kgo.Record
	for int64(len(recs)) < total {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(recs), total, err)
		}
		fetches.EachError(func(topic string, p int32, err error) {
			t.Fatalf("fetch %s/%d: %v", topic, p, err)
		})
		recs = append(recs, fetches.Records()...)
	}
	return recs
}

// checkPerKeyOrder checks that every key's records arrive complete and in
// order. With dupsAllowed, a record may repeat one already seen (a retried
// batch produced it again) but never jump ahead of the next expected one.
func checkPerKeyOrder(t *testing.T, recs []*kgo.Record, keys, perKey int, dupsAllowed bool) (dups int) {
	t.Helper()
	next := make(map[string]int) // key -> next new seq
	for _, r := range recs {
		key, seqText, ok := strings.Cut(string(r.Value), ":")
		seq, err := strconv.Atoi(seqText)
		if !ok || err != nil || key != string(r.Key) {
			t.Fatalf("bad record key %q value %q", r.Key, r.Value)
		}
		switch n := next[key]; {
		case seq == n:
			next[key]++
		case seq < n && dupsAllowed:
			dups++
		default:
			t.Fatalf("key %s: got seq %d at partition %d offset %d, want %d (order broken)", key, seq, r.Partition, r.Offset, n)
		}
	}
	if len(next) != keys {
		t.Errorf("%d keys consumed, want %d", len(next), keys)
	}
	for key, n := range next {
		if n != perKey {
			t.Errorf("key %s: %d records, want %d", key, n, perKey)
		}
	}
	return dups
}

func TestRoundTripPerKeyOrder(t *testing.T) {
	c := newCluster(t)
	p := newProducer(t, c, Config{})
	const keys, perKey = 16, 50
	if failures := sendLikeQueue(t, p.SendRecords, workload(keys, perKey), 37); len(failures) > 0 {
		t.Fatalf("sends failed on a healthy cluster: %v", failures)
	}
	recs := consumeAll(t, c)
	checkPerKeyOrder(t, recs, keys, perKey, false)
	// The partitioner is murmur2 by key: each key sits in one partition.
	partitionOf := make(map[string]int32)
	for _, r := range recs {
		if p, ok := partitionOf[string(r.Key)]; ok && p != r.Partition {
			t.Fatalf("key %s in partitions %d and %d", r.Key, p, r.Partition)
		}
		partitionOf[string(r.Key)] = r.Partition
	}
}

// TestRecordTimestampIsSendTime: the send stamps its records itself (one
// clock read per batch); a consumer sees the time of the send, to the
// millisecond, and never the zero time.
func TestRecordTimestampIsSendTime(t *testing.T) {
	c := newCluster(t)
	p := newProducer(t, c, Config{})
	before := time.Now().Truncate(time.Millisecond)
	if failures := sendLikeQueue(t, p.SendRecords, workload(8, 10), 40); len(failures) > 0 {
		t.Fatalf("sends failed on a healthy cluster: %v", failures)
	}
	after := time.Now()
	recs := consumeAll(t, c)
	if len(recs) != 80 {
		t.Fatalf("consumed %d records, want 80", len(recs))
	}
	for _, r := range recs {
		if r.Timestamp.Before(before) || r.Timestamp.After(after) {
			t.Fatalf("record %q has timestamp %v, outside the sends' [%v, %v]", r.Value, r.Timestamp, before, after)
		}
		if r.Timestamp.Nanosecond()%int(time.Millisecond) != 0 {
			t.Fatalf("record %q has timestamp %v, not whole milliseconds", r.Value, r.Timestamp)
		}
	}
}

// TestBrokerErrorRetriedInsideClient fails whole produce requests with a
// retriable error, through a kfake control: franz-go retries them itself and
// the sends succeed with nothing lost, duplicated or reordered.
func TestBrokerErrorRetriedInsideClient(t *testing.T) {
	c := newCluster(t)
	var failuresLeft atomic.Int32
	failuresLeft.Store(3)
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		if failuresLeft.Add(-1) < 0 {
			c.DropControl()
			return nil, nil, false
		}
		c.KeepControl()
		return failProduce(kreq.(*kmsg.ProduceRequest), kerr.NotLeaderForPartition), nil, true
	})
	p := newProducer(t, c, Config{})
	const keys, perKey = 8, 20
	if failures := sendLikeQueue(t, p.SendRecords, workload(keys, perKey), 25); len(failures) > 0 {
		t.Fatalf("sends failed although the client retries internally: %v", failures)
	}
	if n := failuresLeft.Load(); n >= 0 {
		t.Fatalf("only %d of 3 injected failures were hit", 3-n-1)
	}
	checkPerKeyOrder(t, consumeAll(t, c), keys, perKey, false)
}

// failProduce answers every partition of req with code.
func failProduce(req *kmsg.ProduceRequest, code *kerr.Error) *kmsg.ProduceResponse {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = code.Code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// warmProducerWithFault starts a cluster and a producer (DeliveryTimeout
// 1 s), sends one "warm" record so that later faults hit produce requests
// rather than metadata loading, then makes partition refuse every produce
// request with NOT_LEADER_FOR_PARTITION until the fault is removed.
func warmProducerWithFault(t *testing.T, partition int32) (*kfake.Cluster, *Producer, *kfake.FaultHandle) {
	t.Helper()
	c := newCluster(t)
	p := newProducer(t, c, Config{DeliveryTimeout: time.Second})
	if err := p.SendRecords(context.Background(), []Record{{Key: []byte("warm"), Value: []byte("warm:0")}}); err != nil {
		t.Fatal(err)
	}
	fault := c.Fault(kfake.Fault{
		Keys:       []kmsg.Key{kmsg.Produce},
		Topic:      testTopic,
		Partitions: []int32{partition},
		Err:        kerr.NotLeaderForPartition,
		Count:      -1,
	})
	return c, p, fault
}

// TestBrokerErrorRetriedByQueue makes one partition refuse produce requests
// (NOT_LEADER_FOR_PARTITION) until the client's DeliveryTimeout gives up on
// them: the send fails part way with a retryable error, the fault is lifted,
// the queue-like driver retries the batch, and the consumer still sees every
// key complete and in order (with the acknowledged part of the failed
// attempt repeated).
func TestBrokerErrorRetriedByQueue(t *testing.T) {
	c, p, fault := warmProducerWithFault(t, 0)
	const keys, perKey = 16, 30
	failures := sendLikeQueueNotify(t, p.SendRecords, workload(keys, perKey), 40, func(error) { fault.Remove() })
	if len(failures) == 0 {
		t.Fatalf("no send failed; fault hits: %d", fault.Hits())
	}
	for _, err := range failures {
		if IsFatal(err) {
			t.Errorf("retriable broker error reported as fatal: %v", err)
		}
		if !errors.Is(err, kgo.ErrRecordTimeout) {
			t.Errorf("error %v does not wrap kgo.ErrRecordTimeout", err)
		}
	}
	recs := consumeAll(t, c)
	kept := recs[:0]
	for _, r := range recs {
		if string(r.Key) != "warm" {
			kept = append(kept, r)
		}
	}
	dups := checkPerKeyOrder(t, kept, keys, perKey, true)
	t.Logf("%d failed sends, %d fault hits, %d records read back, %d duplicates from retries", len(failures), fault.Hits(), len(kept), dups)
}

func TestFatalBrokerError(t *testing.T) {
	c := newCluster(t)
	p := newProducer(t, c, Config{})
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: testTopic, Err: kerr.MessageTooLarge})
	err := p.SendValues(context.Background(), [][]byte{[]byte("x")})
	if !IsFatal(err) || !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("err = %v, want fatal and MESSAGE_TOO_LARGE", err)
	}
	if !strings.Contains(err.Error(), "1 of 1 records") {
		t.Errorf("error %q does not count the failed records", err)
	}
	// The fault answered one request: the cluster is healthy again.
	if err := p.SendValues(context.Background(), [][]byte{[]byte("y")}); err != nil {
		t.Fatalf("send after the fault: %v", err)
	}
}

func TestEncodeErrorIsFatalAndProducesNothing(t *testing.T) {
	c := newCluster(t)
	p := newProducer(t, c, Config{})
	errBad := errors.New("bad item")
	send := SendFuncOf(p, func(v int) (Record, error) {
		if v == 3 {
			return Record{}, errBad
		}
		return Record{Value: []byte(strconv.Itoa(v))}, nil
	})
	err := send(context.Background(), []int{1, 2, 3, 4})
	if !IsFatal(err) || !errors.Is(err, errBad) {
		t.Fatalf("err = %v, want fatal wrapping the encode error", err)
	}
	if recs := consumeAll(t, c); len(recs) != 0 {
		t.Fatalf("%d records produced from a batch that failed to encode", len(recs))
	}
}

func TestCanceledContextIsRetryable(t *testing.T) {
	c := newCluster(t)
	p := newProducer(t, c, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := p.SendValues(ctx, [][]byte{[]byte("x")})
	if err == nil || IsFatal(err) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want a retryable context.Canceled", err)
	}
}

func TestClosedProducerIsFatal(t *testing.T) {
	c := newCluster(t)
	p := newProducer(t, c, Config{})
	p.Close()
	err := p.SendValues(context.Background(), [][]byte{[]byte("x")})
	if !IsFatal(err) || !errors.Is(err, kgo.ErrClientClosed) {
		t.Fatalf("err = %v, want fatal ErrClientClosed", err)
	}
}

func TestSendValuesAndEmptyBatch(t *testing.T) {
	c := newCluster(t)
	p := newProducer(t, c, Config{})
	if err := p.SendValues(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	batch := [][]byte{[]byte("a"), []byte("b"), []byte("c")}
	if err := p.SendValues(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	recs := consumeAll(t, c)
	got := make(map[string]bool)
	for _, r := range recs {
		if r.Key != nil {
			t.Errorf("record %q has key %q, want none", r.Value, r.Key)
		}
		got[string(r.Value)] = true
	}
	if len(recs) != 3 || !got["a"] || !got["b"] || !got["c"] {
		t.Fatalf("read back %d records %v, want a, b, c", len(recs), got)
	}
}

func TestNewProducerInvalidConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no topic":              {},
		"delivery timeout < 1s": {Topic: "t", DeliveryTimeout: time.Millisecond},
		"negative buffered":     {Topic: "t", MaxBufferedRecords: -1},
		"huge buffered":         {Topic: "t", MaxBufferedRecords: 1<<40 + 1},
		"idempotence disabled":  {Topic: "t", ClientOpts: []kgo.Opt{kgo.DisableIdempotentWrite()}},
		"manual flushing":       {Topic: "t", ClientOpts: []kgo.Opt{kgo.ManualFlushing()}},
		"invalid client option": {Topic: "t", ClientOpts: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:notaport")}},
	} {
		if p, err := NewProducer(cfg); !errors.Is(err, vinequeue.ErrInvalidConfig) {
			if p != nil {
				p.Close()
			}
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
}

func TestQueueKeyIsKeyOf(t *testing.T) {
	long := strings.Repeat("long key ", 20)
	for _, in := range []string{"", "a", "key-42", long} {
		if got, want := QueueKey([]byte(in)), vinequeue.KeyOf(in); got != want {
			t.Errorf("QueueKey(%q) = %#x, KeyOf = %#x", in, got, want)
		}
	}
	b := []byte(long)
	if n := testing.AllocsPerRun(100, func() { _ = QueueKey(b) }); n != 0 {
		t.Errorf("QueueKey allocates %v times", n)
	}
}

// TestContextEndWhileInFlight ends the send's context while its produce
// request is in flight, and the broker drops the connection instead of
// answering. The idempotent client cannot fail records whose request may
// have been written, so it retries them on a new connection; the send
// returns once their fate is known (acked, or failed by the context), never
// leaving them in the client, and never with a fatal error.
func TestContextEndWhileInFlight(t *testing.T) {
	c := newCluster(t)
	p := newProducer(t, c, Config{})
	if err := p.SendValues(context.Background(), [][]byte{[]byte("warm")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cancel()
		return nil, errors.New("connection dropped by the test"), true
	})
	err := p.SendValues(ctx, [][]byte{[]byte("x"), []byte("y")})
	if IsFatal(err) {
		t.Fatalf("err = %v, want nil or retryable", err)
	}
	t.Logf("send returned %v", err)
}

// TestBatchLargerThanBuffer produces a batch in chunks of MaxBufferedRecords,
// concurrently with other sends competing for the same room.
func TestBatchLargerThanBuffer(t *testing.T) {
	c := newCluster(t)
	p := newProducer(t, c, Config{MaxBufferedRecords: 7})
	const keys, perKey = 5, 20
	recs := workload(keys, perKey)
	errs := make(chan error, 3)
	for i := range 3 {
		go func() { errs <- p.SendRecords(context.Background(), recs[i*len(recs)/3:(i+1)*len(recs)/3]) }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// The three concurrent sends split each key's sequence in three runs
	// that may land in any order, so check completeness, not order.
	got := make(map[string]int)
	for _, r := range consumeAll(t, c) {
		got[string(r.Value)]++
	}
	for _, r := range recs {
		if got[string(r.Value)] != 1 {
			t.Errorf("record %s read %d times, want 1", r.Value, got[string(r.Value)])
		}
	}
	if len(got) != len(recs) {
		t.Errorf("%d distinct records, want %d", len(got), len(recs))
	}
	// One batch alone keeps its order across chunks.
	c2 := newCluster(t)
	p2 := newProducer(t, c2, Config{MaxBufferedRecords: 7})
	if err := p2.SendRecords(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	checkPerKeyOrder(t, consumeAll(t, c2), keys, perKey, false)
}
