// pgjdbc against the reference CRM through Maschera: DatabaseMetaData, server-side prepared statements
// (past prepareThreshold), batch inserts, ResultSet streaming with a fetch size, transactions.
// Usage: java -cp postgresql.jar JdbcClient.java JDBC_URL USER PASSWORD
// Prints one line per operation: op<TAB>pass|refused|broken<TAB>detail (refused: an SQLException
// carrying the server's SQLSTATE; broken: anything else).
import java.sql.*;
import java.util.*;

public class JdbcClient {
    interface Op { String run() throws Exception; }

    static String oneLine(Object text) {
        String s = String.valueOf(text).replaceAll("\\s+", " ");
        return s.length() > 300 ? s.substring(0, 300) : s;
    }

    static void run(String op, Op fn) {
        try {
            String detail = fn.run();
            System.out.println(op + "\tpass\t" + oneLine(detail == null ? "" : detail));
        } catch (SQLException e) {
            String state = e.getSQLState();
            if (state != null && !state.startsWith("08")) {
                System.out.println(op + "\trefused\t" + state + " " + oneLine(e.getMessage()));
            } else {
                System.out.println(op + "\tbroken\t" + oneLine(e));
                e.printStackTrace();
            }
        } catch (Throwable e) {
            System.out.println(op + "\tbroken\t" + oneLine(e));
            e.printStackTrace();
        }
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        String url = args[0], user = args[1], password = args[2];
        long base = user.equals("dora") ? 500000L : 400000L;
        Properties props = new Properties();
        props.setProperty("user", user);
        props.setProperty("password", password);
        props.setProperty("prepareThreshold", "5");
        props.setProperty("socketTimeout", "60");
        Connection[] holder = new Connection[1];
        run("connect", () -> {
            holder[0] = DriverManager.getConnection(url, props);
            DatabaseMetaData md = holder[0].getMetaData();
            return md.getDatabaseProductName() + " " + md.getDatabaseProductVersion();
        });
        Connection conn = holder[0];
        if (conn == null) {
            System.out.println("done");
            return;
        }
        String[] schema = new String[1];
        run("current_schema", () -> {
            schema[0] = conn.getSchema();
            return "schema=" + schema[0];
        });
        run("metadata_tables", () -> {
            List<String> names = new ArrayList<>();
            Set<String> schemas = new TreeSet<>();
            try (ResultSet rs = conn.getMetaData().getTables(null, null, "%", new String[] {"TABLE", "VIEW"})) {
                while (rs.next()) {
                    schemas.add(rs.getString("TABLE_SCHEM"));
                    if (rs.getString("TABLE_SCHEM").equals(schema[0])) names.add(rs.getString("TABLE_NAME"));
                }
            }
            return "tables=" + String.join(",", names) + " schemas=" + String.join(",", schemas);
        });
        run("metadata_columns", () -> {
            List<String> cols = new ArrayList<>();
            try (ResultSet rs = conn.getMetaData().getColumns(null, schema[0], "contacts", "%")) {
                while (rs.next()) cols.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME"));
            }
            return "columns=" + String.join(",", cols);
        });
        run("metadata_primary_keys", () -> {
            List<String> cols = new ArrayList<>();
            try (ResultSet rs = conn.getMetaData().getPrimaryKeys(null, schema[0], "contacts")) {
                while (rs.next()) cols.add(rs.getString("TABLE_SCHEM") + "." + rs.getString("COLUMN_NAME"));
            }
            return "pk=" + String.join(",", cols);
        });
        run("prepared_past_threshold", () -> {
            int rows = 0;
            try (PreparedStatement ps = conn.prepareStatement("SELECT id, email, tax_code FROM contacts WHERE id = ?")) {
                for (int i = 1; i <= 10; i++) {
                    ps.setLong(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) rows++;
                    }
                }
                boolean server = ps.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare();
                return "rows=" + rows + " server_prepared=" + server;
            }
        });
        run("aggregates", () -> {
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT d.stage, count(*), sum(d.amount) FROM deals d JOIN contacts c ON c.id = d.contact_id WHERE c.region = ? GROUP BY d.stage ORDER BY 1")) {
                ps.setString(1, "north");
                int n = 0;
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) n++;
                }
                return "stages=" + n;
            }
        });
        run("batch_insert", () -> {
            conn.setAutoCommit(false);
            try {
                try (PreparedStatement ps = conn.prepareStatement(
                        "INSERT INTO contacts (id, first_name, last_name, email, phone, region, city) VALUES (?, ?, ?, ?, ?, ?, ?)")) {
                    for (int i = 0; i < 20; i++) {
                        ps.setLong(1, base + i);
                        ps.setString(2, "Jdbc");
                        ps.setString(3, "Batch" + i);
                        ps.setString(4, "jdbc" + (base + i) + "@example.it");
                        ps.setString(5, "+39 004 " + (base + i));
                        ps.setString(6, "north");
                        ps.setString(7, "Torino");
                        ps.addBatch();
                    }
                    int[] counts = ps.executeBatch();
                    conn.commit();
                    return "batched=" + counts.length;
                }
            } catch (Exception e) {
                conn.rollback();
                throw e;
            } finally {
                conn.setAutoCommit(true);
            }
        });
        run("streaming_fetch_size", () -> {
            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.setFetchSize(25);
                int n = 0;
                try (ResultSet rs = st.executeQuery("SELECT id, notes FROM interactions ORDER BY id")) {
                    while (rs.next()) n++;
                }
                conn.commit();
                return "streamed=" + n;
            } finally {
                conn.setAutoCommit(true);
            }
        });
        run("update_delete", () -> {
            try (PreparedStatement up = conn.prepareStatement("UPDATE contacts SET city = ? WHERE id >= ? AND id < ?");
                 PreparedStatement del = conn.prepareStatement("DELETE FROM contacts WHERE id >= ? AND id < ?")) {
                up.setString(1, "Genova");
                up.setLong(2, base);
                up.setLong(3, base + 20);
                int updated = up.executeUpdate();
                del.setLong(1, base);
                del.setLong(2, base + 20);
                return "updated=" + updated + " deleted=" + del.executeUpdate();
            }
        });
        run("insert_other_region", () -> {
            try (PreparedStatement ps = conn.prepareStatement(
                    "INSERT INTO contacts (id, first_name, last_name, email, phone, region) VALUES (?, 'O', 'R', ?, ?, 'south')")) {
                ps.setLong(1, base + 99);
                ps.setString(2, "o" + base + "@example.it");
                ps.setString(3, "+39 005 " + base);
                ps.executeUpdate();
            }
            try (Statement st = conn.createStatement()) {
                st.executeUpdate("DELETE FROM contacts WHERE id = " + (base + 99));
            }
            return "";
        });
        run("select_health_records", () -> {
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM health_records")) {
                rs.next();
                return "n=" + rs.getLong(1);
            }
        });
        run("after_refusal", () -> {
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM contacts")) {
                rs.next();
                return "n=" + rs.getLong(1);
            }
        });
        conn.close();
        System.out.println("done");
    }
}
