package dev.txpipe.bench;

import java.nio.ByteBuffer;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/**
 * The repartition topic's value: one transaction's amount in minor units and
 * its type. Merchant and currency are the key, the event time is the record's
 * timestamp, so 9 bytes carry the rest.
 */
record Amount(long minor, boolean refund) {
  static final Serde<Amount> SERDE =
      Serdes.serdeFrom(new AmountSerializer(), new AmountDeserializer());

  private static final class AmountSerializer implements Serializer<Amount> {
    @Override
    public byte[] serialize(String topic, Amount a) {
      if (a == null) return null;
      return ByteBuffer.allocate(9).putLong(a.minor()).put((byte) (a.refund() ? 1 : 0)).array();
    }
  }

  private static final class AmountDeserializer implements Deserializer<Amount> {
    @Override
    public Amount deserialize(String topic, byte[] data) {
      if (data == null) return null;
      ByteBuffer b = ByteBuffer.wrap(data);
      return new Amount(b.getLong(), b.get() == 1);
    }
  }
}
