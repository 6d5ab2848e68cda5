package dev.txpipe.bench;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;

/**
 * The command line: {@code --name value} flags. Currency decimals come from the
 * runner (CURRENCIES of jobs/lib/currency.ts), so the set is defined once.
 * {@code --client-config FILE} is a Java properties file of extra client
 * settings (the runner's SASL credentials on a secured cluster), read here so
 * that no secret has to be on the command line.
 */
record Options(
    String bootstrap,
    String input,
    String output,
    String applicationId,
    long windowMs,
    long graceMs,
    Map<String, Integer> decimals,
    int threads,
    String stateDir,
    Optional<Long> commitIntervalMs,
    Properties clientConfig) {

  static final String USAGE = "usage: AggregateApp --bootstrap HOST:PORT[,...] --input TOPIC"
      + " --output TOPIC --application-id ID --window-ms MS --grace-ms MS"
      + " --currency-decimals USD=2,JPY=0,... --state-dir DIR [--threads N]"
      + " [--commit-interval-ms MS] [--client-config FILE]";

  static Options parse(String[] args) {
    Map<String, String> flags = new HashMap<>();
    for (int i = 0; i < args.length; i += 2) {
      if (!args[i].startsWith("--") || i + 1 >= args.length) {
        throw new IllegalArgumentException("expected --flag value pairs, given " + args[i]);
      }
      flags.put(args[i].substring(2), args[i + 1]);
    }
    String commit = flags.remove("commit-interval-ms");
    String threads = flags.remove("threads");
    String clientConfig = flags.remove("client-config");
    Options o = new Options(
        required(flags, "bootstrap"),
        required(flags, "input"),
        required(flags, "output"),
        required(flags, "application-id"),
        atLeast("window-ms", required(flags, "window-ms"), 1),
        atLeast("grace-ms", required(flags, "grace-ms"), 0),
        decimals(required(flags, "currency-decimals")),
        (int) atLeast("threads", threads == null ? "1" : threads, 1),
        required(flags, "state-dir"),
        Optional.ofNullable(commit).map(ms -> atLeast("commit-interval-ms", ms, 0)),
        clientConfig == null ? new Properties() : properties(clientConfig));
    if (!flags.isEmpty()) throw new IllegalArgumentException("unknown flags " + flags.keySet());
    return o;
  }

  private static String required(Map<String, String> flags, String name) {
    String v = flags.remove(name);
    if (v == null || v.isBlank()) throw new IllegalArgumentException("missing --" + name);
    return v;
  }

  private static long atLeast(String name, String value, long min) {
    try {
      long n = Long.parseLong(value);
      if (n >= min) return n;
    } catch (NumberFormatException e) {
      // reported below
    }
    throw new IllegalArgumentException(
        "--" + name + ": expected an integer >= " + min + ", given " + value);
  }

  /** The properties in a file, read as Properties#load(InputStream) does (ISO-8859-1). */
  private static Properties properties(String path) {
    Properties p = new Properties();
    try (InputStream in = Files.newInputStream(Path.of(path))) {
      p.load(in);
    } catch (IOException | IllegalArgumentException e) {
      throw new IllegalArgumentException("--client-config: cannot read " + path + ": " + e);
    }
    return p;
  }

  /** "USD=2,JPY=0" to {USD: 2, JPY: 0}. */
  private static Map<String, Integer> decimals(String text) {
    Map<String, Integer> out = new HashMap<>();
    for (String pair : text.split(",")) {
      String[] kv = pair.split("=", 2);
      if (kv.length != 2 || kv[0].isBlank() || !kv[1].matches("[0-9]")) {
        throw new IllegalArgumentException("--currency-decimals: expected CODE=DIGIT pairs,"
            + " given " + pair);
      }
      out.put(kv[0].trim(), Integer.parseInt(kv[1]));
    }
    return Map.copyOf(out);
  }
}
