package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// loadResult is what -load prints.
type loadResult struct {
	Sent, Accepted int // requests made; answered 202
	Arrived        int // distinct events read back from the topic
	Duplicates     int // records read back more than once (at-least-once delivery)
	OutOfOrder     int // records of a key that came before an earlier one of the key
	Elapsed        time.Duration
}

func (r loadResult) String() string {
	return fmt.Sprintf("load: sent %d, accepted %d, arrived %d (duplicates %d, out of per-key order %d) in %v",
		r.Sent, r.Accepted, r.Arrived, r.Duplicates, r.OutOfOrder, r.Elapsed.Round(time.Millisecond))
}

// runLoad posts n events over keys keys to the gateway (values "KEY/SEQ",
// SEQ counting per key), then reads the topic from the start until every
// accepted event arrived or 30 s pass, checking per-key order.
func runLoad(ctx context.Context, g *gateway, n, keys int) (loadResult, error) {
	var res loadResult
	t0 := time.Now()
	client := &http.Client{Timeout: 10 * time.Second}
	seq := make([]int, max(keys, 1))
	for i := range n {
		k := i % len(seq)
		key := "k" + strconv.Itoa(k)
		body := key + "/" + strconv.Itoa(seq[k])
		res.Sent++
		resp, err := client.Post(g.URL()+"/events?key="+url.QueryEscape(key), "application/octet-stream", bytes.NewBufferString(body))
		if err != nil {
			return res, err
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusAccepted {
			res.Accepted++
			seq[k]++
		}
	}
	arrived, err := consume(ctx, g.brokers, g.cfg.Topic, res.Accepted, 30*time.Second)
	res.Elapsed = time.Since(t0)
	// Per key, each record is the next one or, after a retried send, one
	// already seen; anything else is out of order.
	next := make(map[string]int)
	seen := make(map[string]bool)
	for _, r := range arrived {
		v, key := string(r.Value), string(r.Key)
		s, _ := strconv.Atoi(v[len(key)+1:])
		switch {
		case seen[v]:
			res.Duplicates++
		case s == next[key]:
			next[key]++
		default:
			res.OutOfOrder++
		}
		seen[v] = true
	}
	res.Arrived = len(seen)
	switch {
	case err != nil:
		return res, err
	case res.Arrived != res.Accepted || res.OutOfOrder != 0:
		return res, errors.New("gateway: load: what arrived is not what was accepted, in per-key order")
	}
	return res, nil
}

// consume reads topic from the start until want records arrived or wait
// passes.
func consume(ctx context.Context, brokers []string, topic string, want int, wait time.Duration) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var got []*kgo.Record
	for len(got) < want {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return got, fmt.Errorf("gateway: %d of %d records arrived within %v", len(got), want, wait)
		}
		if err := fetches.Err0(); err != nil {
			return got, err
		}
		fetches.EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	return got, nil
}
