package dev.txpipe.bench;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectWriter;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.math.BigDecimal;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.Suppressed.BufferConfig;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.processor.TimestampExtractor;
import org.apache.kafka.streams.state.WindowStore;

/** The aggregation's topology (see {@link AggregateApp} for the semantics). */
final class AggregateTopology {
  /** Names the repartition topic: {@code <application.id>-by-merchant-currency-repartition}. */
  static final String GROUPED = "by-merchant-currency";
  static final String STORE = "window-totals";

  private AggregateTopology() {}

  /** txpipe's Aggregate (jobs/lib/windows.ts), the output topic's value. */
  record Aggregate(
      String merchantId,
      String currency,
      long windowStart,
      long windowEnd,
      long transactionCount,
      long purchaseCount,
      long refundCount,
      BigDecimal purchaseAmount,
      BigDecimal refundAmount,
      BigDecimal netAmount,
      BigDecimal minAmount,
      BigDecimal maxAmount,
      long purchaseAmountMinor,
      long refundAmountMinor,
      long netAmountMinor,
      long minAmountMinor,
      long maxAmountMinor) {}

  private static final ObjectWriter WRITER = JsonMapper.builder()
      .enable(JsonGenerator.Feature.WRITE_BIGDECIMAL_AS_PLAIN)
      .build()
      .writerFor(Aggregate.class);

  /** Event time: the transaction's own time, not the time it was produced. */
  static final class TransactionTimeExtractor implements TimestampExtractor {
    @Override
    public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
      if (record.value() instanceof Parsed.Valid v) return v.transactionTime();
      // Skipped right after: any valid (non-negative) time that moves nothing forward.
      return Math.max(partitionTime, 0);
    }
  }

  static Topology build(Options o) {
    StreamsBuilder builder = new StreamsBuilder();
    builder
        .stream(o.input(), Consumed.with(Serdes.String(), TransactionParser.serde(o.decimals()))
            .withTimestampExtractor(new TransactionTimeExtractor())
            .withName("transactions"))
        .flatMap(AggregateTopology::rekey, Named.as("rekey"))
        .groupByKey(Grouped.with(GROUPED, Serdes.String(), Amount.SERDE))
        .windowedBy(TimeWindows.ofSizeAndGrace(
            Duration.ofMillis(o.windowMs()), Duration.ofMillis(o.graceMs())))
        .aggregate(
            () -> Totals.EMPTY,
            (key, amount, totals) -> totals.add(amount),
            Named.as("add-to-window"),
            Materialized.<String, Totals, WindowStore<Bytes, byte[]>>as(STORE)
                .withKeySerde(Serdes.String())
                .withValueSerde(Totals.SERDE))
        .suppress(Suppressed.untilWindowCloses(BufferConfig.unbounded())
            .withName("until-window-closes"))
        .toStream(Named.as("closed-windows"))
        .map((window, totals) -> toOutput(window, totals, o.decimals()), Named.as("to-aggregate"))
        .to(o.output(), Produced.with(Serdes.String(), Serdes.String()).withName("aggregates"));
    return builder.build();
  }

  /** Valid transactions re-keyed by merchant and currency; invalid ones skipped and counted. */
  private static List<KeyValue<String, Amount>> rekey(String userId, Parsed parsed) {
    if (parsed instanceof Parsed.Valid v) return List.of(KeyValue.pair(v.groupKey(), v.amount()));
    TransactionParser.countInvalid();
    return List.of();
  }

  private static KeyValue<String, String> toOutput(
      Windowed<String> window, Totals t, Map<String, Integer> decimals) {
    String merchant = Parsed.merchantOf(window.key());
    String currency = Parsed.currencyOf(window.key());
    int exponent = decimals.get(currency);
    long net = Math.subtractExact(t.purchaseMinor(), t.refundMinor());
    Aggregate a = new Aggregate(
        merchant,
        currency,
        window.window().start(),
        window.window().end(),
        t.count(),
        t.purchases(),
        t.refunds(),
        BigDecimal.valueOf(t.purchaseMinor(), exponent),
        BigDecimal.valueOf(t.refundMinor(), exponent),
        BigDecimal.valueOf(net, exponent),
        BigDecimal.valueOf(t.minMinor(), exponent),
        BigDecimal.valueOf(t.maxMinor(), exponent),
        t.purchaseMinor(),
        t.refundMinor(),
        net,
        t.minMinor(),
        t.maxMinor());
    try {
      return KeyValue.pair(merchant, WRITER.writeValueAsString(a));
    } catch (JsonProcessingException e) {
      throw new IllegalStateException("cannot write an aggregate as JSON", e);
    }
  }
}
