package dev.txpipe.bench;

import java.nio.ByteBuffer;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/**
 * A window's running totals in minor units, as kept in the window store:
 * txpipe's WindowState (jobs/lib/windows.ts) without the key fields.
 */
record Totals(
    long count,
    long purchases,
    long refunds,
    long purchaseMinor,
    long refundMinor,
    long minMinor,
    long maxMinor) {
  static final Totals EMPTY = new Totals(0, 0, 0, 0, 0, Long.MAX_VALUE, Long.MIN_VALUE);
  static final Serde<Totals> SERDE =
      Serdes.serdeFrom(new TotalsSerializer(), new TotalsDeserializer());

  /** These totals with one more transaction (addToWindow of windows.ts). */
  Totals add(Amount a) {
    return new Totals(
        count + 1,
        purchases + (a.refund() ? 0 : 1),
        refunds + (a.refund() ? 1 : 0),
        a.refund() ? purchaseMinor : Math.addExact(purchaseMinor, a.minor()),
        a.refund() ? Math.addExact(refundMinor, a.minor()) : refundMinor,
        Math.min(minMinor, a.minor()),
        Math.max(maxMinor, a.minor()));
  }

  private static final int BYTES = 7 * Long.BYTES;

  private static final class TotalsSerializer implements Serializer<Totals> {
    @Override
    public byte[] serialize(String topic, Totals t) {
      if (t == null) return null;
      return ByteBuffer.allocate(BYTES)
          .putLong(t.count()).putLong(t.purchases()).putLong(t.refunds())
          .putLong(t.purchaseMinor()).putLong(t.refundMinor())
          .putLong(t.minMinor()).putLong(t.maxMinor())
          .array();
    }
  }

  private static final class TotalsDeserializer implements Deserializer<Totals> {
    @Override
    public Totals deserialize(String topic, byte[] data) {
      if (data == null) return null;
      ByteBuffer b = ByteBuffer.wrap(data);
      long count = b.getLong();
      long purchases = b.getLong();
      long refunds = b.getLong();
      long purchaseMinor = b.getLong();
      long refundMinor = b.getLong();
      return new Totals(
          count, purchases, refunds, purchaseMinor, refundMinor, b.getLong(), b.getLong());
    }
  }
}
