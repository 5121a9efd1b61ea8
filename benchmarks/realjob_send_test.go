package benchmarks

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/vineroute/vinequeue/contrib/kafka"
)

// BenchmarkRealJobSend is the real job's delivery side alone: 8, 16 or 32
// goroutines (the queue's Workers) call contrib/kafka's SendRecords with batches of 1000 of the
// real job's records (200-byte values, 10k keys), as the queue's senders
// do, against the kfake child process, until b.N records are acknowledged.
// No queue in front: it measures the sink's chain (hand-over to the client,
// the client's produce requests, the promises) without the queue's own
// cost or the producers' phase. ns/op is wall time per record; cpu-ns/ev is
// this process's CPU per record (getrusage), the figure to compare while
// the machine is busy; brk-ns/ev the broker process's; rec/req the records
// per produce request the broker counted.
//
// Run: go test -run '^$' -bench RealJobSend -benchtime 1000000x -count 6
func BenchmarkRealJobSend(b *testing.B) {
	for _, workers := range []int{8, 16, 32} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) { benchSend(b, workers) })
	}
}

const realJobSendBatch = 1000

func benchSend(b *testing.B, workers int) {
	br := startBroker(b)
	p, err := kafka.NewProducer(kafka.Config{Topic: realJobTopic, ClientOpts: []kgo.Opt{kgo.SeedBrokers(br.addr)}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	load := newRealJobLoad()
	batches := make([][]kafka.Record, (b.N+realJobSendBatch-1)/realJobSendBatch)
	for i := range batches {
		n := min(realJobSendBatch, b.N-i*realJobSendBatch)
		batches[i] = make([]kafka.Record, n)
		for j := range batches[i] {
			batches[i][j] = kafka.Record{Key: load.keys[(i*realJobSendBatch+j)%realJobKeys], Value: load.value}
		}
	}
	ctx := context.Background()
	// The client learns the topic's partitions with its first records.
	if err := p.SendRecords(ctx, batches[0][:1]); err != nil {
		b.Fatal(err)
	}
	counts0 := br.counts(b)
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu0, t0 := cpuTime(), time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(batches) {
					return
				}
				if err := p.SendRecords(ctx, batches[i]); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed, cpu := time.Since(t0), cpuTime()-cpu0
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	counts := br.counts(b)
	requests := counts.requests - counts0.requests
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/ev")
	b.ReportMetric(float64(counts.cpu-counts0.cpu)/float64(b.N), "brk-ns/ev")
	b.ReportMetric(float64(counts.records-counts0.records)/float64(max(requests, 1)), "rec/req")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ev/s")
	b.ReportMetric(0, "ns/op") // wall time per record is ev/s, said once
}
