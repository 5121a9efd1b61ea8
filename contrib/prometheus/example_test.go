package prometheus_test

import (
	"context"
	"fmt"
	"log"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vineroute/vinequeue"
	vqprom "github.com/vineroute/vinequeue/contrib/prometheus"
)

// Example exports a queue's Stats and its Send histograms to Prometheus. In
// a service, serve reg with promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).
func Example() {
	sendMetrics := vqprom.NewSendMetrics(vqprom.SendOpts{})
	sink := func(ctx context.Context, batch []string) error { return nil }
	q, err := vinequeue.New(vinequeue.Config[string]{
		Send: vqprom.InstrumentSend(sink, sendMetrics),
	})
	if err != nil {
		log.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(vqprom.NewCollector(q.Stats, vqprom.Opts{}), sendMetrics)

	for _, v := range []string{"a", "b", "c"} {
		if err := q.Enqueue(v); err != nil {
			log.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		log.Fatal(err)
	}

	families, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			switch name := mf.GetName(); {
			case name == "vinequeue_enqueued_total", name == "vinequeue_delivered_total":
				fmt.Println(name, m.GetCounter().GetValue())
			case name == "vinequeue_send_batch_size":
				// One series per result: "ok" and "error".
				fmt.Printf("%s{result=%q} items: %v\n", name, m.GetLabel()[0].GetValue(), m.GetHistogram().GetSampleSum())
			}
		}
	}
	// Output:
	// vinequeue_delivered_total 3
	// vinequeue_enqueued_total 3
	// vinequeue_send_batch_size{result="error"} items: 0
	// vinequeue_send_batch_size{result="ok"} items: 3
}
