package dev.txpipe.bench;

/** An input value: a transaction the aggregation can use, or why not. */
sealed interface Parsed {
  /** What the aggregation needs of a valid transaction. */
  record Valid(String merchantId, String currency, long transactionTime, Amount amount)
      implements Parsed {
    /** The grouping key, txpipe's repartition key: currency codes hold no "|". */
    String groupKey() {
      return merchantId + "|" + currency;
    }
  }

  /** A record txpipe would dead-letter, with its reason code. */
  record Invalid(String reason) implements Parsed {}

  /** The merchant of a group key (everything before the last "|"). */
  static String merchantOf(String groupKey) {
    return groupKey.substring(0, groupKey.lastIndexOf('|'));
  }

  /** The currency of a group key (everything after the last "|"). */
  static String currencyOf(String groupKey) {
    return groupKey.substring(groupKey.lastIndexOf('|') + 1);
  }
}
