// Command publish sends one message to a fanout node over gRPC and prints
// the topic sequence number and the number of subscribers it reached.
//
//	publish --addr 127.0.0.1:50051 --topic news --payload 'hello'
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	fanoutv1 "fanout/gen/fanout/v1"
	"google.golang.org/grpc"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "fanoutd gRPC address HOST:PORT")
	topic := flag.String("topic", "news", "topic to publish to")
	payload := flag.String("payload", "", "message body, sent as bytes")
	flag.Parse()

	if err := publish(*addr, *topic, []byte(*payload)); err != nil {
		fmt.Fprintf(os.Stderr, "publish: %v\n", err)
		os.Exit(1)
	}
}

func publish(addr, topic string, payload []byte) error {
	conn, err := grpc.Dial(addr, grpc.WithInsecure())
	if err != nil {
		return err
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := fanoutv1.NewFanoutClient(conn).Publish(ctx, &fanoutv1.PublishRequest{
		Topic:   topic,
		Payload: payload,
	})
	if err != nil {
		return err
	}
	fmt.Printf("seq=%d subscribers=%d\n", resp.GetSeq(), resp.GetSubscribers())
	return nil
}
