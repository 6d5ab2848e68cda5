package dev.txpipe.bench;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.MapperFeature;
import com.fasterxml.jackson.databind.ObjectReader;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.io.IOException;
import java.math.BigDecimal;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/**
 * Reads the input's JSON values into {@link Parsed}: never throws, so an
 * invalid record reaches the topology as {@link Parsed.Invalid}, is skipped
 * there and counted, instead of stopping the application. Its rules are
 * txpipe's (jobs/lib/transaction.ts) for the fields the aggregation reads.
 */
final class TransactionParser implements Deserializer<Parsed> {
  /** 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z: txpipe's accepted event times. */
  static final long MIN_TIME = 946_684_800_000L;
  static final long MAX_TIME = 4_102_444_800_000L;
  /** txpipe's amounts are JavaScript numbers: minor units stay safe integers. */
  static final long MAX_SAFE_INTEGER = 9_007_199_254_740_991L;
  static final int MAX_ID_LENGTH = 128;

  private static final AtomicLong INVALID = new AtomicLong();

  /** Only the fields the aggregation needs; the others are ignored. */
  record Json(
      String merchantId,
      String currency,
      BigDecimal amount, // exact: Jackson reads a BigDecimal from the number's text
      long transactionTime,
      String transactionType) {}

  private static final ObjectReader READER = JsonMapper.builder()
      .disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
      .enable(DeserializationFeature.FAIL_ON_MISSING_CREATOR_PROPERTIES)
      .enable(DeserializationFeature.FAIL_ON_NULL_CREATOR_PROPERTIES)
      .disable(DeserializationFeature.ACCEPT_FLOAT_AS_INT) // 1.5 is not a time
      .disable(MapperFeature.ALLOW_COERCION_OF_SCALARS) // "12.50" is not an amount
      .build()
      .readerFor(Json.class);

  private final Map<String, Integer> decimals;

  TransactionParser(Map<String, Integer> decimals) {
    this.decimals = decimals;
  }

  /** The input's value Serde: transactions are only ever read here. */
  static Serde<Parsed> serde(Map<String, Integer> decimals) {
    Serializer<Parsed> none = (topic, parsed) -> {
      throw new UnsupportedOperationException("transactions are only read");
    };
    return Serdes.serdeFrom(none, new TransactionParser(decimals));
  }

  /** Invalid records skipped so far, all threads. */
  static long invalidRecords() {
    return INVALID.get();
  }

  /** Counts one skipped record (called where the topology drops it). */
  static void countInvalid() {
    INVALID.incrementAndGet();
  }

  @Override
  public Parsed deserialize(String topic, byte[] data) {
    if (data == null || data.length == 0) return new Parsed.Invalid("empty_value");
    Json j;
    try {
      j = READER.readValue(data);
    } catch (IOException e) {
      return new Parsed.Invalid("malformed_or_wrong_type");
    }
    if (j.merchantId().isBlank() || j.merchantId().length() > MAX_ID_LENGTH) {
      return new Parsed.Invalid("invalid_id");
    }
    Integer exponent = decimals.get(j.currency());
    if (exponent == null) return new Parsed.Invalid("unknown_currency");
    if (j.amount().signum() <= 0) return new Parsed.Invalid("invalid_amount");
    long minor;
    try {
      minor = j.amount().movePointRight(exponent).longValueExact(); // throws on a fraction left
    } catch (ArithmeticException e) {
      return new Parsed.Invalid("invalid_amount");
    }
    if (minor > MAX_SAFE_INTEGER) return new Parsed.Invalid("invalid_amount");
    if (j.transactionTime() < MIN_TIME || j.transactionTime() >= MAX_TIME) {
      return new Parsed.Invalid("invalid_time");
    }
    boolean refund;
    switch (j.transactionType()) {
      case "purchase" -> refund = false;
      case "refund" -> refund = true;
      default -> {
        return new Parsed.Invalid("invalid_transaction_type");
      }
    }
    return new Parsed.Valid(
        j.merchantId(), j.currency(), j.transactionTime(), new Amount(minor, refund));
  }
}
