#!/usr/bin/env bash
# Apache Kafka for the tests and benches: Maven copies the broker's jars (the version in
# tests/kafka-broker/pom.xml, with what it needs at run time) from Maven Central into
# $WHARF_KAFKA_HOME (default $HOME/.cache/wharf/kafka)/libs, and the KRaft storage of a
# one-node cluster is formatted once into .../template. The tests (tests/common/kafka.rs)
# copy that template for each broker they start, on 127.0.0.1 and free ports.
#
# Cached: a second run, with the same pom.xml, does nothing. Needs Java 17+ and Maven.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
pom="$here/kafka-broker/pom.xml"
home="${WHARF_KAFKA_HOME:-$HOME/.cache/wharf/kafka}"
stamp="$home/ready-$(sha256sum "$pom" | cut -c1-16)"
if [ -f "$stamp" ]; then
  echo "== Apache Kafka $(ls "$home/libs" | sed -n 's/^kafka_2.13-\(.*\)\.jar$/\1/p') cached in $home"
  exit 0
fi

for tool in java mvn; do
  command -v "$tool" >/dev/null || { echo "tests/kafka-up.sh: \`$tool\` not found (Java 17+ and Maven are needed for the Kafka broker)" >&2; exit 1; }
done

echo "== resolving Apache Kafka's jars from Maven Central into $home/libs"
rm -rf "$home/libs" "$home/template" "$home"/ready-*
mkdir -p "$home"
# The build directory goes to the cache too, so nothing is written into the checkout.
# (Maven 3.8 prints colour resets even in batch mode: they are taken out.)
mvn -B -q -Dstyle.color=never -f "$pom" -Dproject.build.directory="$home/maven-build" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$home/libs" 2>&1 \
  | sed 's/\x1b\[[0-9;]*m//g'
rm -rf "$home/maven-build"
ls "$home"/libs/kafka_2.13-*.jar >/dev/null

echo "== formatting the KRaft storage template in $home/template"
mkdir -p "$home/template/data"
cat > "$home/template/format.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
log.dirs=$home/template/data
EOF
java -Xmx256m -cp "$home/libs/*" kafka.tools.StorageTool format \
  -t "$(java -Xmx64m -cp "$home/libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null)" \
  -c "$home/template/format.properties" 2>/dev/null
ls "$home/template/data/meta.properties" >/dev/null
touch "$stamp"
echo "== Apache Kafka $(ls "$home/libs" | sed -n 's/^kafka_2.13-\(.*\)\.jar$/\1/p') ready in $home"
