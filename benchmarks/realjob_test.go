package benchmarks

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/vineroute/vinequeue"
	"github.com/vineroute/vinequeue/contrib/kafka"
)

// The real job: N producer goroutines hand 200-byte records over 10k keys
// to Kafka and the run ends once every record is acknowledged. Kafka is
// kfake in a child process (this test binary re-executed), so that the
// CPU measured here with getrusage is the producer side only.
//
// Contenders, same run, same broker process per contender:
//   - franz-go: kgo.Client.Produce from each producer with a promise (its
//     defaults: 10 ms linger, idempotent, acks all), the code a user would
//     otherwise write.
//   - vq-mem-enqueue, vq-mem-key: VineQueue in memory mode with
//     contrib/kafka's SendRecords, through Enqueue and EnqueueKey.
//   - vq-mem-key-linger: vq-mem-key with kgo.ProducerLinger(10ms), franz-go's
//     default, instead of contrib/kafka's 0.
//   - vq-periodic-key, vq-sync-key: the same through EnqueueKey with a WAL
//     in Periodic and Sync mode (t.TempDir).
//
// Columns: events/s over the whole run (first call to last ack), caller
// CPU per event (getrusage user+system of this process over the run,
// divided by the events: everything on the producer side, the queue's
// goroutines and franz-go's included), produce requests the broker saw per
// 1000 events, and the p99 of the producer call (Produce, Enqueue,
// EnqueueKey), sampled one call in 8.
//
// Run: VINEBENCH_REALJOB=1 go test -run TestRealJob -v -timeout 30m
// (VINEBENCH_REALJOB_EVENTS, default 200000; VINEBENCH_REALJOB_PRODUCERS,
// default "32,256").

const (
	realJobTopic      = "events"
	realJobPartitions = 16
	realJobKeys       = 10000
	realJobValueSize  = 200
	realJobSampleMask = 7 // sample one call latency in 8
)

// TestRealJobKfakeChild is the broker process: it serves kfake on
// 127.0.0.1, prints its address, answers "count" on stdin with the number
// of produce requests so far, and exits when stdin closes.
func TestRealJobKfakeChild(t *testing.T) {
	if os.Getenv("VINEBENCH_KFAKE_CHILD") == "" {
		t.Skip("only run as the real-job benchmark's broker process")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(realJobPartitions, realJobTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var produces atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		produces.Add(1)
		return nil, nil, false
	})
	fmt.Printf("ADDR %s\n", c.ListenAddrs()[0])
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "count" {
			fmt.Printf("COUNT %d\n", produces.Load())
		}
	}
}

// broker is a kfake child process.
type broker struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	addr string
}

func startBroker(t *testing.T) *broker {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestRealJobKfakeChild$")
	cmd.Env = append(os.Environ(), "VINEBENCH_KFAKE_CHILD=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &broker{cmd: cmd, in: in, out: bufio.NewScanner(outPipe)}
	t.Cleanup(b.stop)
	b.addr = strings.TrimPrefix(b.line(t, "ADDR "), "ADDR ")
	return b
}

// line returns the child's next line starting with prefix.
func (b *broker) line(t *testing.T, prefix string) string {
	for b.out.Scan() {
		if s := b.out.Text(); strings.HasPrefix(s, prefix) {
			return s
		}
	}
	t.Fatalf("broker process ended before printing %q: %v", prefix, b.out.Err())
	return ""
}

func (b *broker) produceRequests(t *testing.T) int64 {
	if _, err := io.WriteString(b.in, "count\n"); err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(b.line(t, "COUNT "), "COUNT "), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (b *broker) stop() {
	_ = b.in.Close()
	_ = b.cmd.Wait()
}

// realJobLoad is the shared input: keys and one value (read only).
type realJobLoad struct {
	keys  [][]byte
	value []byte
}

func newRealJobLoad() realJobLoad {
	l := realJobLoad{value: make([]byte, realJobValueSize)}
	for i := range l.value {
		l.value[i] = byte('a' + i%26)
	}
	for i := range realJobKeys {
		l.keys = append(l.keys, fmt.Appendf(nil, "user-%05d", i))
	}
	return l
}

// realJobContender is one contender: start builds the producing side
// against addr and returns the per-event call and a wait for every ack.
type realJobContender struct {
	name  string
	start func(t *testing.T, addr string, events int) (call func(key []byte, value []byte) error, waitAcked func() error)
}

type realJobResult struct {
	events   int
	elapsed  time.Duration
	cpu      time.Duration
	requests int64
	p99, p50 time.Duration
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func runRealJob(t *testing.T, c realJobContender, load realJobLoad, producers, events int) realJobResult {
	b := startBroker(t)
	call, waitAcked := c.start(t, b.addr, events)
	reqs0 := b.produceRequests(t)

	per := events / producers
	events = per * producers
	lat := make([][]time.Duration, producers)
	var ready, done sync.WaitGroup
	startGun := make(chan struct{})
	var failed atomic.Int64
	for g := range producers {
		ready.Add(1)
		done.Add(1)
		lat[g] = make([]time.Duration, 0, per/(realJobSampleMask+1)+1)
		go func() {
			defer done.Done()
			ready.Done()
			<-startGun
			for i := range per {
				key := load.keys[(g*per+i)%realJobKeys]
				if i&realJobSampleMask == 0 {
					t0 := time.Now()
					if call(key, load.value) != nil {
						failed.Add(1)
					}
					lat[g] = append(lat[g], time.Since(t0))
					continue
				}
				if call(key, load.value) != nil {
					failed.Add(1)
				}
			}
		}()
	}
	ready.Wait()
	cpu0, t0 := cpuTime(), time.Now()
	close(startGun)
	done.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%s: %d calls failed", c.name, n)
	}
	if err := waitAcked(); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	elapsed, cpu := time.Since(t0), cpuTime()-cpu0
	reqs := b.produceRequests(t) - reqs0
	all := slices.Concat(lat...)
	slices.Sort(all)
	return realJobResult{
		events: events, elapsed: elapsed, cpu: cpu, requests: reqs,
		p50: all[len(all)/2], p99: all[len(all)*99/100],
	}
}

// franzAlone is kgo.Client.Produce with a counting promise.
func franzAlone() realJobContender {
	return realJobContender{name: "franz-go", start: func(t *testing.T, addr string, events int) (func([]byte, []byte) error, func() error) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(realJobTopic))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		var acked, failed atomic.Int64
		alldone := make(chan struct{})
		var wantMu sync.Mutex
		want := int64(-1)
		check := func() {
			wantMu.Lock()
			if want >= 0 && acked.Load()+failed.Load() == want {
				select {
				case <-alldone:
				default:
					close(alldone)
				}
			}
			wantMu.Unlock()
		}
		promise := func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
			} else {
				acked.Add(1)
			}
			check()
		}
		var produced atomic.Int64
		call := func(key, value []byte) error {
			produced.Add(1)
			cl.Produce(context.Background(), &kgo.Record{Key: key, Value: value}, promise)
			return nil
		}
		wait := func() error {
			wantMu.Lock()
			want = produced.Load()
			wantMu.Unlock()
			check()
			<-alldone
			if n := failed.Load(); n > 0 {
				return fmt.Errorf("%d records failed", n)
			}
			return nil
		}
		return call, wait
	}}
}

// vineQueue is VineQueue with contrib/kafka, through Enqueue or EnqueueKey.
func vineQueue(name string, keyed bool, mode vinequeue.WALMode, withWAL bool, clientOpts ...kgo.Opt) realJobContender {
	return realJobContender{name: name, start: func(t *testing.T, addr string, events int) (func([]byte, []byte) error, func() error) {
		p, err := kafka.NewProducer(kafka.Config{Topic: realJobTopic, ClientOpts: append([]kgo.Opt{kgo.SeedBrokers(addr)}, clientOpts...)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		var dropped atomic.Int64
		cfg := vinequeue.Config[kafka.Record]{
			SizeOf:        kafka.RecordSize,
			Send:          p.SendRecords,
			Workers:       8,
			FlushInterval: 10 * time.Millisecond,
			Codec:         kafka.RecordCodec{},
			OnDrop:        func(batch []kafka.Record, _ error) { dropped.Add(int64(len(batch))) },
		}
		if withWAL {
			cfg.WAL = vinequeue.WALConfig{Dir: t.TempDir(), Mode: mode}
		}
		q, err := vinequeue.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		call := func(key, value []byte) error {
			rec := kafka.Record{Key: key, Value: value}
			if keyed {
				return q.EnqueueKey(kafka.QueueKey(key), rec)
			}
			return q.Enqueue(rec)
		}
		wait := func() error {
			err := q.Close() // delivers everything accepted: every record acked
			st := q.Stats()
			if err == nil && (st.Dropped != 0 || st.Delivered != st.Enqueued) {
				err = fmt.Errorf("stats %+v: not every record delivered", st)
			}
			t.Logf("%s: %d batches, mean %.0f records per Send", name, st.Batches, float64(st.Delivered)/float64(max(st.Batches, 1)))
			return err
		}
		return call, wait
	}}
}

func TestRealJob(t *testing.T) {
	if os.Getenv("VINEBENCH_REALJOB") == "" {
		t.Skip("set VINEBENCH_REALJOB=1 to run the real-job benchmark")
	}
	events := 200000
	if s := os.Getenv("VINEBENCH_REALJOB_EVENTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		events = n
	}
	producerCounts := []int{32, 256}
	if s := os.Getenv("VINEBENCH_REALJOB_PRODUCERS"); s != "" {
		producerCounts = nil
		for f := range strings.SplitSeq(s, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			producerCounts = append(producerCounts, n)
		}
	}
	contenders := []realJobContender{
		franzAlone(),
		vineQueue("vq-mem-enqueue", false, 0, false),
		vineQueue("vq-mem-key", true, 0, false),
		vineQueue("vq-mem-key-linger", true, 0, false, kgo.ProducerLinger(10*time.Millisecond)),
		vineQueue("vq-periodic-key", true, vinequeue.Periodic, true),
		vineQueue("vq-sync-key", true, vinequeue.Sync, true),
	}
	if only := os.Getenv("VINEBENCH_REALJOB_ONLY"); only != "" {
		// franz-go stays: it is every ratio's base.
		re, err := regexp.Compile(only)
		if err != nil {
			t.Fatalf("VINEBENCH_REALJOB_ONLY: %v", err)
		}
		kept := contenders[:1]
		for _, c := range contenders[1:] {
			if re.MatchString(c.name) {
				kept = append(kept, c)
			}
		}
		contenders = kept
	}
	load := newRealJobLoad()
	var table strings.Builder
	fmt.Fprintf(&table, "\n%-16s %9s %10s %10s %12s %10s %10s %8s\n", "contender", "producers", "events", "events/s", "cpu/event", "req/1k ev", "p50 call", "p99 call")
	for _, producers := range producerCounts {
		var base realJobResult
		for i, c := range contenders {
			r := runRealJob(t, c, load, producers, events)
			if i == 0 {
				base = r
			}
			rate := float64(r.events) / r.elapsed.Seconds()
			fmt.Fprintf(&table, "%-18s %9d %10d %10.0f %12v %10.2f %10v %8v   (%.2fx events/s, %.2fx cpu/event of franz-go)\n",
				c.name, producers, r.events, rate, r.cpu/time.Duration(r.events), 1000*float64(r.requests)/float64(r.events),
				r.p50, r.p99, rate/(float64(base.events)/base.elapsed.Seconds()),
				(float64(r.cpu)/float64(r.events))/(float64(base.cpu)/float64(base.events)))
		}
	}
	t.Log(table.String())
}
