"""txpipe's aggregation job (jobs/aggregate.ts) as Spark Structured Streaming.

The Spark contender of `deno task bench`: tests/bench/spark.ts starts it on a
backlog and reads its progress lines (stdout, one JSON object per micro-batch)
to tell when the whole backlog was processed. Not part of txpipe's pipeline.

What it computes, as txpipe does: per merchantId, currency and tumbling
event-time window of W ms (aligned to the epoch), the transaction count,
purchase and refund counts, purchase and refund sums and the min and max
amount, all in exact integer minor units; one final record per window, keyed
by merchantId, once the watermark has passed the window's end.

Amounts: `amount` is read by Spark's JSON parser straight into a DECIMAL
(Jackson's BigDecimal of the number's text, never a double), then checked to
have at most the currency's decimals and turned into minor units exactly.
The currency decimals come from the runner (txpipe's CURRENCIES).

Where the semantics differ from txpipe's, honestly:

- Watermark. txpipe keeps a watermark per input partition (that partition's
  highest event time minus the allowed lateness L) and closes a window only
  when every input partition's watermark has passed its end. Spark keeps one
  global watermark: the highest event time seen over all partitions, minus
  L, advanced only between micro-batches. With partitions read unevenly (one
  far ahead of another within a batch), Spark can close a window before the
  slower partition's records for it arrive; txpipe cannot.
- Late records. txpipe drops (dead-letters) a record whose event time is
  below its partition's watermark, even when its window is still open.
  Spark drops a record only when its window has already been closed (window
  end <= watermark) and counts it in the state operator's
  numRowsDroppedByWatermark; a record behind the watermark but in an open
  window still counts. Within one micro-batch nothing is late at all.
- Invalid records are filtered out, not dead-lettered, and only what the
  aggregation relies on is validated: currency in the set, amount > 0 with
  at most the currency's decimals, transactionTime an integer in txpipe's
  range, transactionType, merchantId not blank and at most 128 characters.
  txpipe also checks the UUID, location and payment method, and JSON types
  strictly where Spark's parser is lenient (a number where a string is
  expected is read as its text, "12.50" as an amount). The benchmark's
  backlog is valid, so this costs neither side anything there.
- Delivery. Spark's Kafka sink is at-least-once (a restart from the
  checkpoint may write a window twice); txpipe writes each window exactly
  once in a Kafka transaction. On one uninterrupted run they agree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQueryListener

# txpipe's accepted transactionTime range (jobs/lib/transaction.ts).
MIN_TRANSACTION_TIME = 946_684_800_000
MAX_TRANSACTION_TIME = 4_102_444_800_000
MAX_ID_LENGTH = 128

TRANSACTION = T.StructType(
    [
        T.StructField("transactionId", T.StringType()),
        T.StructField("userId", T.StringType()),
        # 18 decimals: an amount with more than the currency's decimals is still
        # seen as such (and rejected) instead of being rounded on parse.
        T.StructField("amount", T.DecimalType(38, 18)),
        T.StructField("currency", T.StringType()),
        T.StructField("transactionTime", T.LongType()),
        T.StructField("merchantId", T.StringType()),
        T.StructField("transactionType", T.StringType()),
        T.StructField("location", T.StringType()),
        T.StructField("paymentMethod", T.StringType()),
        T.StructField("isInternational", T.BooleanType()),
    ]
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, comma-separated")
    p.add_argument("--input", required=True, help="topic of transactions")
    p.add_argument("--output", required=True, help="topic of window aggregates")
    p.add_argument("--window-ms", type=int, required=True)
    p.add_argument("--allowed-lateness-ms", type=int, required=True)
    p.add_argument("--currencies", required=True, help='JSON {"USD": 2, "JPY": 0, ...}')
    p.add_argument("--work-dir", required=True, help="temp folder: checkpoint, log config")
    p.add_argument("--jars", required=True, help="folder of the Kafka connector's jars")
    p.add_argument(
        "--client-config",
        help="Java properties file of extra Kafka client settings (the SASL credentials on a"
        " secured cluster), given to the source and the sink as kafka.* options",
    )
    p.add_argument("--shuffle-partitions", type=int, default=2)
    p.add_argument(
        "--max-offsets-per-trigger",
        type=int,
        default=0,
        help="records per micro-batch; 0 = no limit (the whole backlog in one batch)",
    )
    return p.parse_args()


# One escape of a Java properties file: \uXXXX, or a backslash and the character it quotes.
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")
_ESCAPED = {"n": "\n", "r": "\r", "t": "\t", "f": "\f"}


def _unescape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        return chr(int(e[1:], 16)) if len(e) == 5 else _ESCAPED.get(e, e)

    # \uXXXX pairs of a surrogate pair become one character through UTF-16.
    return _ESCAPE.sub(one, text).encode("utf-16", "surrogatepass").decode("utf-16")


def kafka_options(path: str | None) -> dict[str, str]:
    """The `kafka.`-prefixed source and sink options of a client properties file ({} without one).

    Reads the one-line `key=value` entries tests/bench/client_config.ts writes
    (Java's escapes; comments and blank lines skipped). The values are never
    printed: they may hold a password.
    """
    if not path:
        return {}
    options: dict[str, str] = {}
    for line in Path(path).read_text(encoding="latin-1").splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "!")):
            continue
        m = re.match(r"((?:[^\\=:]|\\.)*)[=:](.*)", line.lstrip())
        if not m:
            sys.exit(f"aggregate.py: --client-config: expected key=value lines in {path}")
        options["kafka." + _unescape(m.group(1).rstrip())] = _unescape(m.group(2).lstrip())
    return options


def log_config(work_dir: Path) -> Path:
    """A log4j2 config at WARN on stderr, in place of Spark's INFO default."""
    path = work_dir / "log4j2.properties"
    path.write_text(
        "\n".join(
            [
                "rootLogger.level = warn",
                "rootLogger.appenderRef.stderr.ref = console",
                "appender.console.type = Console",
                "appender.console.name = console",
                "appender.console.target = SYSTEM_ERR",
                "appender.console.layout.type = PatternLayout",
                "appender.console.layout.pattern = %d{HH:mm:ss.SSS} %p %c{1}: %m%n",
                # Benign at start-up: no Hadoop native libraries on this machine.
                "logger.native.name = org.apache.hadoop.util.NativeCodeLoader",
                "logger.native.level = error",
                "",
            ]
        )
    )
    return path


def session(a: argparse.Namespace) -> SparkSession:
    jars = sorted(str(p) for p in Path(a.jars).glob("*.jar"))
    if not jars:
        sys.exit(f"aggregate.py: no jars in {a.jars}")
    log4j = log_config(Path(a.work_dir))
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("txpipe-bench-spark-aggregate")
        .config("spark.jars", ",".join(jars))
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log4j}")
        # One shuffle partition per core: each partition is a state store that
        # every micro-batch loads, updates and checkpoints, so Spark's default of
        # 200 would spend most of a batch on 198 idle stores.
        .config("spark.sql.shuffle.partitions", str(a.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    return spark


def minor_units(
    amount: Column, currency: Column, decimals: dict[str, int]
) -> tuple[Column, Column]:
    """(valid, minor): whether `amount` has at most the currency's decimals, and its minor units.

    round() takes a literal scale, so there is one branch per distinct number
    of decimals in the currency set (two: 0 and 2).
    """
    valid = F.lit(False)
    minor = F.lit(None).cast(T.LongType())
    for d in sorted(set(decimals.values())):
        codes = [c for c, n in decimals.items() if n == d]
        exact = amount == F.round(amount, d)
        valid = F.when(currency.isin(codes), exact).otherwise(valid)
        scaled = (F.round(amount, d) * F.lit(10**d)).cast(T.LongType())
        minor = F.when(currency.isin(codes), scaled).otherwise(minor)
    return valid, minor


def transactions(
    spark: SparkSession, a: argparse.Namespace, client: dict[str, str]
) -> DataFrame:
    """The input topic's valid transactions: merchantId, currency, eventTime, refund, minor."""
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", a.bootstrap)
        .options(**client)
        .option("subscribe", a.input)
        .option("startingOffsets", "earliest")
        .option("kafka.isolation.level", "read_committed")
    )
    if a.max_offsets_per_trigger > 0:
        reader = reader.option("maxOffsetsPerTrigger", a.max_offsets_per_trigger)
    decimals: dict[str, int] = json.loads(a.currencies)
    tx = F.from_json(F.col("value").cast("string"), TRANSACTION)
    rows = reader.load().select(tx.alias("t")).select("t.*")
    valid_amount, minor = minor_units(F.col("amount"), F.col("currency"), decimals)
    ok = (
        F.col("merchantId").isNotNull()
        & (F.length(F.trim(F.col("merchantId"))) > 0)
        & (F.length(F.col("merchantId")) <= MAX_ID_LENGTH)
        & F.col("currency").isin(list(decimals))
        & (F.col("amount") > 0)
        & valid_amount
        & F.col("transactionTime").between(MIN_TRANSACTION_TIME, MAX_TRANSACTION_TIME - 1)
        & F.col("transactionType").isin("purchase", "refund")
    )
    return rows.where(ok).select(
        "merchantId",
        "currency",
        F.timestamp_millis(F.col("transactionTime")).alias("eventTime"),
        (F.col("transactionType") == "refund").alias("refund"),
        minor.alias("minor"),
    )


def aggregates(tx: DataFrame, a: argparse.Namespace) -> DataFrame:
    """One row per closed window: Kafka key (merchantId) and JSON value."""
    purchase = ~F.col("refund")
    windows = (
        tx.withWatermark("eventTime", f"{a.allowed_lateness_ms} milliseconds")
        .groupBy(F.window("eventTime", f"{a.window_ms} milliseconds"), "merchantId", "currency")
        .agg(
            F.count(F.lit(1)).alias("transactionCount"),
            F.count(F.when(purchase, 1)).alias("purchaseCount"),
            F.count(F.when(F.col("refund"), 1)).alias("refundCount"),
            # coalesce: a window of only purchases has no refunds to sum (and vice versa).
            F.coalesce(F.sum(F.when(purchase, F.col("minor"))), F.lit(0)).alias(
                "purchaseAmountMinor"
            ),
            F.coalesce(F.sum(F.when(F.col("refund"), F.col("minor"))), F.lit(0)).alias(
                "refundAmountMinor"
            ),
            F.min("minor").alias("minAmountMinor"),
            F.max("minor").alias("maxAmountMinor"),
        )
    )
    value = F.struct(
        "merchantId",
        "currency",
        F.unix_millis(F.col("window.start")).alias("windowStart"),
        F.unix_millis(F.col("window.end")).alias("windowEnd"),
        "transactionCount",
        "purchaseCount",
        "refundCount",
        "purchaseAmountMinor",
        "refundAmountMinor",
        "minAmountMinor",
        "maxAmountMinor",
    )
    return windows.select(F.col("merchantId").alias("key"), F.to_json(value).alias("value"))


def epoch_ms(iso: str) -> int:
    """Epoch ms of a progress timestamp such as 2026-12-06T05:31:02.123Z."""
    at = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return round(at.astimezone(timezone.utc).timestamp() * 1000)


class ProgressLines(StreamingQueryListener):
    """Prints one JSON line per executed micro-batch (data or no-data) to stdout.

    Idle reports go to onQueryIdle (Spark 3.5+) and are not printed.
    """

    def __init__(self) -> None:
        self.cumulative = 0

    def onQueryStarted(self, event: Any) -> None:
        print(json.dumps({"started": int(time.time() * 1000), "id": str(event.id)}), flush=True)

    def onQueryProgress(self, event: Any) -> None:
        p = event.progress
        self.cumulative += p.numInputRows
        started = epoch_ms(p.timestamp)
        state = p.stateOperators[0] if p.stateOperators else None
        line = {
            "batchId": p.batchId,
            "numInputRows": p.numInputRows,
            "cumulativeInputRows": self.cumulative,
            "endOffsets": json.loads(p.sources[0].endOffset) if p.sources else None,
            "watermark": p.eventTime.get("watermark"),
            "batchStartedAt": started,
            "batchEndedAt": started + int(p.durationMs.get("triggerExecution", 0)),
            "durationMs": p.durationMs,
            "outputRows": p.sink.numOutputRows if p.sink else None,
            "stateRows": state.numRowsTotal if state else None,
            "droppedByWatermark": state.numRowsDroppedByWatermark if state else None,
        }
        print(json.dumps(line), flush=True)

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        if event.exception:
            print(f"aggregate.py: query failed: {event.exception}", file=sys.stderr, flush=True)


def main() -> int:
    a = parse_args()
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    client = kafka_options(a.client_config)
    spark = session(a)
    spark.streams.addListener(ProgressLines())
    query = (
        aggregates(transactions(spark, a, client), a)
        .writeStream.format("kafka")
        .option("kafka.bootstrap.servers", a.bootstrap)
        .options(**client)
        .option("topic", a.output)
        .option("checkpointLocation", os.path.join(a.work_dir, "checkpoint"))
        .outputMode("append")
        .queryName("txpipe_aggregate")
        .start()
    )
    # Short waits, so the SIGTERM handler gets to run between them.
    while query.isActive and not stopping:
        query.awaitTermination(0.5)
    failed = query.exception() is not None
    if query.isActive:
        query.stop()
    spark.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
