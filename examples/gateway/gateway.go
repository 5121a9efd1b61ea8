// Command gateway is a small HTTP-to-Kafka service on a vinequeue queue: the
// service a newcomer would otherwise write by hand around the library.
//
//	POST /events?key=K   body: one event (≤ 1 MiB); 202 once the queue
//	                     accepted it, 503 when it cannot (full, draining)
//	GET  /metrics        Prometheus: the queue's Stats and send histograms
//	GET  /healthz        200 while the process serves
//	GET  /readyz         200 while it accepts events; 503 when draining, at
//	                     the hard memory level, or while Kafka has been
//	                     failing for longer than a retry cycle (Queue.Health,
//	                     as JSON)
//
// Events go through EnqueueKey with kafka.QueueKey(key), so the events of a
// key reach their partition in the order they were accepted, and through a
// WAL (Periodic by default: a crash or kill -9 loses at most about one
// -sync-interval of accepted events; -sync makes a 202 mean "on disk"). On
// SIGTERM or SIGINT the gateway stops taking requests, then drains the queue
// into Kafka within -drain; what is left stays in the WAL for the next start.
//
// Without -brokers it starts an in-process Kafka (kfake) so that it runs
// with nothing else installed; -load N posts N events to itself, reads the
// topic back and prints what it sent and what arrived, then exits.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/vineroute/vinequeue"
	"github.com/vineroute/vinequeue/contrib/kafka"
	vqprom "github.com/vineroute/vinequeue/contrib/prometheus"
)

// maxEvent bounds one request body.
const maxEvent = 1 << 20

// config is what the flags set.
type config struct {
	Addr         string        // HTTP listen address; port 0 picks one
	Brokers      []string      // empty: an in-process kfake cluster
	Topic        string        // created with Partitions on the in-process cluster
	Partitions   int           // in-process cluster only
	WALDir       string        // required
	Sync         bool          // WAL Sync mode instead of Periodic
	SyncInterval time.Duration // Periodic mode's checkpoint period
	Drain        time.Duration // the deadline of the drain at shutdown
	Logger       *slog.Logger
}

// gateway is one running service: its broker (if in process), producer,
// queue and HTTP server.
type gateway struct {
	cfg      config
	cluster  *kfake.Cluster // nil with -brokers
	brokers  []string
	producer *kafka.Producer
	q        *vinequeue.Queue[kafka.Record]
	srv      *http.Server
	ln       net.Listener
	served   chan error // the HTTP server's result
	draining atomic.Bool
}

// start brings the gateway up: broker, producer, queue (replaying what an
// earlier run left in the WAL), metrics, and the HTTP listener.
func start(cfg config) (g *gateway, err error) {
	if cfg.WALDir == "" {
		return nil, errors.New("gateway: a WAL directory is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	g = &gateway{cfg: cfg, brokers: cfg.Brokers, served: make(chan error, 1)}
	defer func() {
		if err != nil {
			g.closeBackends()
		}
	}()
	if len(g.brokers) == 0 {
		g.cluster, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(max(cfg.Partitions, 1)), cfg.Topic))
		if err != nil {
			return nil, fmt.Errorf("gateway: starting the in-process broker: %w", err)
		}
		g.brokers = g.cluster.ListenAddrs()
	}
	g.producer, err = kafka.NewProducer(kafka.Config{
		Topic:      cfg.Topic,
		ClientOpts: []kgo.Opt{kgo.SeedBrokers(g.brokers...)},
	})
	if err != nil {
		return nil, err
	}
	sendMetrics := vqprom.NewSendMetrics(vqprom.SendOpts{})
	mode := vinequeue.Periodic
	if cfg.Sync {
		mode = vinequeue.Sync
	}
	g.q, err = vinequeue.New(vinequeue.Config[kafka.Record]{
		SizeOf:        kafka.RecordSize,
		Send:          vqprom.InstrumentSend(g.producer.SendRecords, sendMetrics),
		FlushInterval: 100 * time.Millisecond,
		Workers:       32, // contrib/kafka's recommendation: sends mostly wait for acks
		WAL:           vinequeue.WALConfig{Dir: cfg.WALDir, Mode: mode, SyncInterval: cfg.SyncInterval},
		Codec:         recordCodec{},
		OnDrop: func(batch []kafka.Record, reason error) {
			cfg.Logger.Error("gateway: events dropped", "n", len(batch), "fatal", kafka.IsFatal(reason), "err", reason)
		},
		Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(vqprom.NewCollector(g.q.Stats, vqprom.Opts{})); err != nil {
		return nil, err
	}
	if err := reg.Register(sendMetrics); err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /events", g.postEvent)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", g.ready)
	g.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	g.ln, err = net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	go func() { g.served <- g.srv.Serve(g.ln) }()
	return g, nil
}

// URL is the gateway's base URL.
func (g *gateway) URL() string { return "http://" + g.ln.Addr().String() }

func (g *gateway) postEvent(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEvent))
	if err != nil {
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	rec := kafka.Record{Value: body}
	if key != "" {
		rec.Key = []byte(key)
	}
	// The queue keeps rec (and so body) until Kafka acknowledged it: body
	// is this request's own slice, which nothing reuses.
	err = g.q.EnqueueKey(kafka.QueueKey(rec.Key), rec)
	switch {
	case err == nil:
		w.WriteHeader(http.StatusAccepted)
	case errors.Is(err, vinequeue.ErrClosed), errors.Is(err, vinequeue.ErrFull), errors.Is(err, vinequeue.ErrWALFull):
		w.Header().Set("Retry-After", "1")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	case errors.Is(err, vinequeue.ErrTooLarge):
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
	default:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// ready: a load balancer should send events here only while the queue takes
// them: not while draining, and not at the hard memory level, where the
// queue spills to the WAL and the backlog grows.
func (g *gateway) ready(w http.ResponseWriter, _ *http.Request) {
	h := g.q.Health()
	w.Header().Set("Content-Type", "application/json")
	if g.draining.Load() || !h.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(h) // the level, the sink failing since, the backlog
}

// shutdown drains: /readyz turns 503, the HTTP server stops taking requests
// and finishes those in flight, then the queue delivers what it holds
// within ctx (Stop; what is left stays in the WAL), then the producer and
// the in-process broker close.
func (g *gateway) shutdown(ctx context.Context) error {
	g.draining.Store(true)
	httpErr := g.srv.Shutdown(ctx)
	if err := <-g.served; !errors.Is(err, http.ErrServerClosed) {
		httpErr = errors.Join(httpErr, err)
	}
	stopErr := g.q.Stop(ctx)
	if stopErr != nil {
		st := g.q.Stats()
		stopErr = fmt.Errorf("gateway: drain: %w (%d events left in the WAL for the next start)", stopErr, st.Buffered)
	}
	g.q = nil
	g.closeBackends()
	return errors.Join(httpErr, stopErr)
}

// closeBackends closes what start opened, in reverse order; the queue must
// be stopped first.
func (g *gateway) closeBackends() {
	if g.q != nil {
		_ = g.q.Stop(context.Background())
	}
	if g.producer != nil {
		g.producer.Close()
	}
	if g.cluster != nil {
		g.cluster.Close()
	}
}

// recordCodec frames a record for the WAL: key length (uvarint), key, value.
// Headers are not kept: the gateway sets none.
type recordCodec struct{}

func (recordCodec) Append(dst []byte, r kafka.Record) ([]byte, error) {
	dst = binary.AppendUvarint(dst, uint64(len(r.Key)))
	dst = append(dst, r.Key...)
	return append(dst, r.Value...), nil
}

func (recordCodec) Decode(src []byte) (kafka.Record, error) {
	n, w := binary.Uvarint(src)
	if w <= 0 || n > uint64(len(src)-w) {
		return kafka.Record{}, errors.New("gateway: bad record framing")
	}
	var r kafka.Record
	if n > 0 {
		r.Key = append([]byte(nil), src[w:w+int(n)]...)
	}
	r.Value = append([]byte(nil), src[w+int(n):]...)
	return r, nil
}

func splitBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}
