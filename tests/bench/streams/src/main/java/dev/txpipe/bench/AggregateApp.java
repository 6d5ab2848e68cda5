/*
 * txpipe's aggregation job (jobs/aggregate.ts) as a Kafka Streams application:
 * the peer it is benchmarked against (tests/bench/kafka_streams.ts runs it).
 *
 *   input (key userId, JSON Transaction)
 *     -> event time = transactionTime (TransactionTimeExtractor)
 *     -> parse exactly, skip and count invalid records
 *     -> re-key by merchantId|currency -> <app>-by-merchant-currency-repartition
 *     -> tumbling windows of size W, grace G (RocksDB window store, changelogged)
 *     -> suppress until the window closes -> output (key merchantId, JSON totals)
 *
 * processing.guarantee=exactly_once_v2, like txpipe's transactions.
 *
 * Semantics compared with txpipe:
 *
 * - Same: windows [start, start + W) aligned to the epoch, keyed by merchant and
 *   currency; amounts summed in integer minor units parsed exactly from the JSON
 *   text (BigDecimal, never a double); one final record per window.
 * - Lateness differs in where time is measured. txpipe keeps a watermark per
 *   INPUT partition (its highest event time minus the allowed lateness L), drops
 *   a record below its partition's watermark, and closes a window when the
 *   LOWEST of the input watermarks has passed its end; the watermarks travel
 *   through the repartition topic as markers, so the outcome does not depend on
 *   timing. Kafka Streams measures stream time per TASK of the windowing stage,
 *   i.e. per repartition partition: the highest timestamp that partition has
 *   seen, whichever input partition it came from. A window closes when
 *   end + G <= that stream time, and a record is dropped ("late") when its
 *   window is already closed. So (1) lateness is per window, not per record: a
 *   record older than the newest by more than G still counts if its window is
 *   open; (2) when one input partition is processed ahead of another (a backlog
 *   is fetched partition by partition), the repartition topic interleaves them
 *   and the lagging partition's records can be dropped as late although txpipe
 *   would count them; how many depends on fetch timing. The application reports
 *   its late drops (Kafka Streams' dropped-records metric) when it stops.
 * - Emission: suppress(untilWindowCloses(unbounded())), the recipe of the Kafka
 *   Streams developer guide ("Window Final Results"). It checks on every record
 *   whether stream time closed a window. EmitStrategy.onWindowClose() would save
 *   the suppression buffer and its changelog, but checks for closed windows at
 *   most once per second of wall-clock time and only when a record arrives, so
 *   at the end of a backlog the windows closed during the last second stay
 *   unemitted: a catch-up run would then not emit the windows its input closed.
 * - Validation covers what the aggregation reads (merchantId, currency, amount,
 *   transactionTime, transactionType) with txpipe's rules; txpipe also checks
 *   the other contract fields (UUID, location, ...) and dead-letters rejects,
 *   here they are only counted. The benchmark's backlog has no invalid records.
 */
package dev.txpipe.bench;

import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;

/** Entry point: parses the flags, runs the topology until SIGTERM, prints a summary line. */
public final class AggregateApp {
  private AggregateApp() {}

  public static void main(String[] args) throws InterruptedException {
    Options o;
    try {
      o = Options.parse(args);
    } catch (IllegalArgumentException e) {
      System.err.println("txpipe-bench-streams: " + e.getMessage());
      System.err.println(Options.USAGE);
      System.exit(2);
      return;
    }
    KafkaStreams streams = new KafkaStreams(AggregateTopology.build(o), config(o));
    CountDownLatch failed = new CountDownLatch(1);
    streams.setUncaughtExceptionHandler(e -> {
      System.err.println("txpipe-bench-streams: stream thread failed: " + e);
      return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
    });
    streams.setStateListener((now, before) -> {
      System.err.println("txpipe-bench-streams: state " + before + " -> " + now);
      if (now == KafkaStreams.State.ERROR) failed.countDown();
    });
    // SIGTERM: close cleanly (commit, leave the group so that it can be deleted at once).
    Thread hook = new Thread(() -> stop(streams), "txpipe-bench-streams-shutdown");
    Runtime.getRuntime().addShutdownHook(hook);
    streams.start();
    failed.await(); // only on ERROR; SIGTERM ends the JVM through the hook
    Runtime.getRuntime().removeShutdownHook(hook);
    stop(streams);
    System.exit(1);
  }

  /**
   * Kafka Streams' defaults, except what the run needs to say. The
   * --client-config properties come first (the flags' own settings win); Kafka
   * Streams applies un-prefixed client settings such as security.protocol and
   * sasl.* to its consumers, producers and admin client alike.
   */
  static Properties config(Options o) {
    Properties p = new Properties();
    p.putAll(o.clientConfig());
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, o.applicationId());
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, o.bootstrap());
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, o.threads());
    p.put(StreamsConfig.STATE_DIR_CONFIG, o.stateDir());
    // Unset, Kafka Streams commits every 100 ms under exactly-once (its EOS default).
    o.commitIntervalMs().ifPresent(ms -> p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, ms));
    return p;
  }

  private static void stop(KafkaStreams streams) {
    long late = lateRecords(streams);
    streams.close(CloseOptions.timeout(Duration.ofSeconds(60))
        .withGroupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP));
    // One JSON line on stdout for the runner.
    System.out.printf("{\"summary\":{\"invalid\":%d,\"late\":%d}}%n",
        TransactionParser.invalidRecords(), late);
    System.out.flush();
  }

  /** Records dropped for a closed window: Kafka Streams' task-level dropped-records-total. */
  private static long lateRecords(KafkaStreams streams) {
    double sum = 0;
    for (Map.Entry<MetricName, ? extends Metric> e : streams.metrics().entrySet()) {
      MetricName n = e.getKey();
      if (n.name().equals("dropped-records-total") && n.group().equals("stream-task-metrics")) {
        sum += ((Number) e.getValue().metricValue()).doubleValue();
      }
    }
    return (long) sum;
  }
}
