package benchmarks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/vineroute/vinequeue"
	"github.com/vineroute/vinequeue/contrib/kafka"
)

// The real job: N producer goroutines hand 200-byte records over 10k keys
// to Kafka and the run ends once every record is acknowledged. Kafka is
// kfake in a child process (this test binary re-executed, a fresh one per
// contender and producer count), so that the CPU measured here is the
// producer side only, and so that it counts the produce requests and the
// records in them without taking part in the timing.
//
// Contenders, same run, same records:
//   - franz-go: kgo.Client.Produce from each producer with a promise (its
//     defaults: 10 ms linger, idempotent, acks all), the code a user would
//     otherwise write.
//   - sarama, kafka-go: the other Go clients' asynchronous producers with
//     delivery reports (realjob_peers_test.go says how each is set up).
//   - vq-mem-enqueue, vq-mem-key: VineQueue in memory mode with
//     contrib/kafka's SendRecords, through Enqueue and EnqueueKey, 32
//     Workers (kafkaWorkers); vq-mem-key-w8 with 8 (fewer batches in
//     flight: emptier produce requests, since each request carries about
//     half of them); vq-mem-key-nolinger with kgo.ProducerLinger(0), as
//     contrib/kafka was before it lingered.
//   - vq-periodic-key, vq-sync-key: the same through EnqueueKey with a WAL
//     in Periodic and Sync mode (t.TempDir).
//   - durable-floor, durable-floor-x2: no Kafka and no queue, the ceiling
//     of any call that returns only once its own record is fdatasynced,
//     as a Sync-mode EnqueueKey does: each producer hands its record to a
//     minimal group committer (one pwrite and one fdatasync per group, into
//     a preallocated, zero-filled file in t.TempDir) and waits for the
//     fdatasync that covers it; x2 lets two groups' fdatasyncs overlap
//     (realjob_floor_test.go). Beside franz-go it says whether Sync can
//     reach franz-go on this disk at all; beside vq-sync-key, how much of
//     Sync's time is the queue's own. durable-floor-falloc is
//     durable-floor on a file only fallocated, as the WAL's segments are
//     (each fdatasync also commits the extents its write converted).
//
// Columns (the README explains each): events/s over the whole run (first
// call to last ack); process CPU per event (getrusage of this process
// over the run: the queue's and the client's goroutines, GC and runtime
// included); caller CPU per event (that CPU times the share of CPU
// profile samples taken inside realJobProducer, i.e. on the producer
// goroutines); the broker process's CPU per event (its own getrusage: it
// shares the cores, so this says whether it limits a run); produce
// requests per 1000 events and records per produce request, both counted
// by the broker; p50 and p99 of the producer call (Produce, Enqueue,
// EnqueueKey, ...), sampled one call in 8.
//
// Run: VINEBENCH_REALJOB=1 go test -run '^TestRealJob$' -v -timeout 30m
// (VINEBENCH_REALJOB_EVENTS, default 1000000; VINEBENCH_REALJOB_PRODUCERS,
// default "32,256"; VINEBENCH_REALJOB_ONLY, a regexp on the contender
// names; franz-go always runs, as every ratio's base;
// VINEBENCH_REALJOB_PROFILE, a directory for each cell's CPU profile).

const (
	realJobTopic      = "events"
	realJobPartitions = 16
	realJobKeys       = 10000
	realJobValueSize  = 200
	realJobSampleMask = 7 // sample one call latency in 8
)

// TestRealJobKfakeChild is the broker process: it serves kfake on
// 127.0.0.1, prints its address, answers "count" on stdin with the number
// of produce requests and of the records in them so far and its own CPU
// time (getrusage), and exits when stdin closes. It only counts: every request goes on to kfake.
func TestRealJobKfakeChild(t *testing.T) {
	if os.Getenv("VINEBENCH_KFAKE_CHILD") == "" {
		t.Skip("only run as the real-job benchmark's broker process")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(realJobPartitions, realJobTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var produces, records, unknown atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		produces.Add(1)
		if pr, ok := req.(*kmsg.ProduceRequest); ok {
			for _, topic := range pr.Topics {
				for _, part := range topic.Partitions {
					n, ok := recordsIn(part.Records)
					records.Add(n)
					if !ok {
						unknown.Add(1)
					}
				}
			}
		}
		return nil, nil, false
	})
	fmt.Printf("ADDR %s\n", c.ListenAddrs()[0])
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "count" {
			fmt.Printf("COUNT %d %d %d %d\n", produces.Load(), records.Load(), unknown.Load(), int64(cpuTime()))
		}
	}
}

// recordsIn counts the records in a produce request's record batches
// (message format v2: every client here speaks it to kfake). ok is false if
// the bytes are not v2 batches, whose records then go uncounted.
func recordsIn(b []byte) (n int64, ok bool) {
	// Batch header: baseOffset int64, batchLength int32 (bytes after this
	// field), partitionLeaderEpoch int32, magic int8 at 16, ..., numRecords
	// int32 at 57.
	const magicAt, numRecordsAt = 16, 57
	for len(b) > 0 {
		if len(b) < numRecordsAt+4 || b[magicAt] != 2 {
			return n, false
		}
		size := 12 + int(int32(binary.BigEndian.Uint32(b[8:12])))
		if size < numRecordsAt+4 || size > len(b) {
			return n, false
		}
		n += int64(int32(binary.BigEndian.Uint32(b[numRecordsAt:])))
		b = b[size:]
	}
	return n, true
}

// broker is a kfake child process.
type broker struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	addr string
}

func startBroker(t testing.TB) *broker {
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
func (b *broker) line(t testing.TB, prefix string) string {
	for b.out.Scan() {
		if s := b.out.Text(); strings.HasPrefix(s, prefix) {
			return s
		}
	}
	t.Fatalf("broker process ended before printing %q: %v", prefix, b.out.Err())
	return ""
}

// brokerCounts is what the broker process counted so far.
type brokerCounts struct {
	requests, records int64         // produce requests, and the records in them
	uncounted         int64         // partition payloads that were not v2 record batches
	cpu               time.Duration // the broker process's CPU time (user and system)
}

func (b *broker) counts(t testing.TB) brokerCounts {
	if _, err := io.WriteString(b.in, "count\n"); err != nil {
		t.Fatal(err)
	}
	var c brokerCounts
	if _, err := fmt.Sscanf(b.line(t, "COUNT "), "COUNT %d %d %d %d", &c.requests, &c.records, &c.uncounted, &c.cpu); err != nil {
		t.Fatal(err)
	}
	return c
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
	events    int
	elapsed   time.Duration
	cpu       time.Duration // process CPU over the run (getrusage)
	callerCPU time.Duration // cpu × the profile's share of samples in realJobProducer
	samples   int           // CPU profile samples behind callerCPU
	broker    brokerCounts  // over the run
	p99, p50  time.Duration
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// realJobProfileHz is the CPU profile's sampling rate: a run of 200k events
// lasts a few hundred milliseconds, too short for the default 100 Hz.
const realJobProfileHz = 2000

// startCallerProfile starts a CPU profile whose samples stop() splits into
// those taken while a producer goroutine ran (their stack holds
// realJobProducer: the call and whatever it does on the caller's
// goroutine, allocation and GC assists included) and the rest (the
// client's or the queue's goroutines, GC workers, the runtime). Goroutines
// a call starts have their own stacks, so their work is not the caller's.
//
// If save is not empty, stop also writes the profile to that file.
func startCallerProfile(t *testing.T, save string) (stop func() (share float64, samples int)) {
	var buf bytes.Buffer
	// StartCPUProfile sets 100 Hz unless a rate is set first; it then
	// prints "cannot set cpu profile rate" to stderr and keeps this one.
	runtime.SetCPUProfileRate(realJobProfileHz)
	if err := pprof.StartCPUProfile(&buf); err != nil {
		t.Fatal(err)
	}
	return func() (float64, int) {
		pprof.StopCPUProfile()
		if save != "" {
			if err := os.WriteFile(save, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		prof, err := profile.Parse(&buf)
		if err != nil {
			t.Fatal(err)
		}
		var caller, all int64
		for _, s := range prof.Sample {
			all += s.Value[0]
			if inProducer(s) {
				caller += s.Value[0]
			}
		}
		if all == 0 {
			return 0, 0
		}
		return float64(caller) / float64(all), int(all)
	}
}

func inProducer(s *profile.Sample) bool {
	for _, loc := range s.Location {
		for _, line := range loc.Line {
			if line.Function != nil && strings.HasSuffix(line.Function.Name, ".realJobProducer") {
				return true
			}
		}
	}
	return false
}

// realJobProducer is one producer goroutine's loop; the CPU profile
// attributes to the caller every sample whose stack holds this function.
//
//go:noinline
func realJobProducer(call func(key, value []byte) error, load realJobLoad, g, per int, lat *[]time.Duration, failed *atomic.Int64) {
	for i := range per {
		key := load.keys[(g*per+i)%realJobKeys]
		if i&realJobSampleMask == 0 {
			t0 := time.Now()
			if call(key, load.value) != nil {
				failed.Add(1)
			}
			*lat = append(*lat, time.Since(t0))
			continue
		}
		if call(key, load.value) != nil {
			failed.Add(1)
		}
	}
}

func runRealJob(t *testing.T, c realJobContender, load realJobLoad, producers, events int) realJobResult {
	b := startBroker(t)
	call, waitAcked := c.start(t, b.addr, events)
	counts0 := b.counts(t)

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
			realJobProducer(call, load, g, per, &lat[g], &failed)
		}()
	}
	ready.Wait()
	save := ""
	if dir := os.Getenv("VINEBENCH_REALJOB_PROFILE"); dir != "" {
		save = filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", c.name, producers))
	}
	stopProfile := startCallerProfile(t, save)
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
	share, samples := stopProfile()
	counts := b.counts(t)
	counts.requests -= counts0.requests
	counts.records -= counts0.records
	counts.uncounted -= counts0.uncounted
	counts.cpu -= counts0.cpu
	if counts.uncounted > 0 {
		t.Errorf("%s: %d partition payloads were not v2 record batches: records per request undercounted", c.name, counts.uncounted)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	return realJobResult{
		events: events, elapsed: elapsed, cpu: cpu,
		callerCPU: time.Duration(share * float64(cpu)), samples: samples,
		broker: counts,
		p50:    all[len(all)/2], p99: all[len(all)*99/100],
	}
}

// franzAlone is kgo.Client.Produce with a counting promise.
func franzAlone() realJobContender {
	return realJobContender{name: "franz-go", start: func(t *testing.T, addr string, _ int) (func([]byte, []byte) error, func() error) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(realJobTopic))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		acks := newAckCounter()
		promise := func(_ *kgo.Record, err error) { acks.report(1, err) }
		ctx := context.Background()
		call := func(key, value []byte) error {
			acks.produced.Add(1)
			cl.Produce(ctx, &kgo.Record{Key: key, Value: value}, promise)
			return nil
		}
		return call, func() error { return acks.wait(realJobAckTimeout) }
	}}
}

// vqSetup is how one VineQueue contender is set up.
type vqSetup struct {
	keyed      bool // EnqueueKey(kafka.QueueKey(key)) rather than Enqueue
	wal        bool
	mode       vinequeue.WALMode
	workers    int // the queue's Workers: sends in flight at once
	clientOpts []kgo.Opt
}

// vineQueue is VineQueue with contrib/kafka, through Enqueue or EnqueueKey.
func vineQueue(name string, setup vqSetup) realJobContender {
	return realJobContender{name: name, start: func(t *testing.T, addr string, _ int) (func([]byte, []byte) error, func() error) {
		p, err := kafka.NewProducer(kafka.Config{Topic: realJobTopic, ClientOpts: append([]kgo.Opt{kgo.SeedBrokers(addr)}, setup.clientOpts...)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		cfg := vinequeue.Config[kafka.Record]{
			SizeOf:        kafka.RecordSize,
			Send:          p.SendRecords,
			Workers:       setup.workers,
			FlushInterval: 10 * time.Millisecond,
			Codec:         kafka.RecordCodec{},
		}
		walDir := ""
		if setup.wal {
			walDir = t.TempDir()
			cfg.WAL = vinequeue.WALConfig{Dir: walDir, Mode: setup.mode}
		}
		q, err := vinequeue.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		call := func(key, value []byte) error {
			rec := kafka.Record{Key: key, Value: value}
			if setup.keyed {
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
			if walDir != "" {
				// t is the whole run's: its TempDir would keep every
				// contender's segments on disk until the run ends.
				err = errors.Join(err, os.RemoveAll(walDir))
			}
			return err
		}
		return call, wait
	}}
}

// fmtDur prints d with three significant digits at most, so that columns
// line up.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.2fµs", float64(d)/float64(time.Microsecond))
	default:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
}

// kafkaWorkers is the queue's Workers in the VineQueue rows: what
// contrib/kafka's doc recommends for a queue that feeds a Producer (its
// sends mostly wait for acks, and a produce request carries about half of
// the Workers' batches). vq-mem-key-w8 shows the cost of fewer.
const kafkaWorkers = 32

func TestRealJob(t *testing.T) {
	if os.Getenv("VINEBENCH_REALJOB") == "" {
		t.Skip("set VINEBENCH_REALJOB=1 to run the real-job benchmark")
	}
	events := 1000000
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
		saramaAsync(),
		kafkaGoAsync(),
		vineQueue("vq-mem-enqueue", vqSetup{workers: kafkaWorkers}),
		vineQueue("vq-mem-key", vqSetup{keyed: true, workers: kafkaWorkers}),
		vineQueue("vq-mem-key-w8", vqSetup{keyed: true, workers: 8}),
		vineQueue("vq-mem-key-nolinger", vqSetup{keyed: true, workers: kafkaWorkers, clientOpts: []kgo.Opt{kgo.ProducerLinger(0)}}),
		vineQueue("vq-periodic-key", vqSetup{keyed: true, wal: true, mode: vinequeue.Periodic, workers: kafkaWorkers}),
		vineQueue("vq-sync-key", vqSetup{keyed: true, wal: true, mode: vinequeue.Sync, workers: kafkaWorkers}),
		durableFloor("durable-floor", 1, true),
		durableFloor("durable-floor-x2", 2, true),
		durableFloor("durable-floor-falloc", 1, false),
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
	fmt.Fprintf(&table, "\n%-22s %5s %8s %9s %8s %9s %8s %8s %8s %9s %9s   %s\n",
		"contender", "prod", "events", "events/s", "cpu/ev", "caller/ev", "brk/ev", "req/1kev", "rec/req", "p50 call", "p99 call", "vs franz-go: events/s, cpu/ev, caller/ev")
	for _, producers := range producerCounts {
		var base realJobResult
		for i, c := range contenders {
			r := runRealJob(t, c, load, producers, events)
			if i == 0 {
				base = r
			}
			rate := float64(r.events) / r.elapsed.Seconds()
			perEvent := func(d time.Duration, n int) float64 { return float64(d) / float64(n) }
			fmt.Fprintf(&table, "%-22s %5d %8d %9.0f %8s %9s %8s %8.3f %8.0f %9s %9s   %.2fx %.2fx %.2fx  (%d samples)\n",
				c.name, producers, r.events, rate,
				fmtDur(r.cpu/time.Duration(r.events)), fmtDur(r.callerCPU/time.Duration(r.events)), fmtDur(r.broker.cpu/time.Duration(r.events)),
				1000*float64(r.broker.requests)/float64(r.events), float64(r.broker.records)/float64(max(r.broker.requests, 1)),
				fmtDur(r.p50), fmtDur(r.p99),
				rate/(float64(base.events)/base.elapsed.Seconds()),
				perEvent(r.cpu, r.events)/perEvent(base.cpu, base.events),
				perEvent(r.callerCPU, r.events)/perEvent(base.callerCPU, base.events),
				r.samples)
		}
	}
	t.Log(table.String())
}
