// pgjdbc without autocommit as an application login (issue 22): pgjdbc sends its BEGIN in the
// extended protocol, in the batch of the transaction's first statement, so the end user is set as
// that first statement: SET LOCAL maschera.end_user, or set_config(..., true) with a bound
// parameter. Two end users alternate transaction by transaction; a rollback, a statement error
// inside a transaction and a bad token leave the next transaction served; a statement prepared in
// one end user's transaction is executed in another's.
// Run: java -cp postgresql.jar EndUserTransactions.java URL USER PASSWORD SAM_TOKEN TOM_TOKEN THRESHOLD
import java.sql.*;
import java.util.*;

public class EndUserTransactions {
    static void setLocal(Connection c, String token, boolean bound) throws SQLException {
        if (bound) {
            try (PreparedStatement s = c.prepareStatement("SELECT set_config('maschera.end_user', ?, true)")) {
                s.setString(1, token);
                s.executeQuery().close();
            }
        } else {
            try (Statement s = c.createStatement()) {
                s.execute("SET LOCAL maschera.end_user = '" + token + "'");
            }
        }
    }

    static List<String> column(Connection c, String sql) throws SQLException {
        List<String> out = new ArrayList<>();
        try (PreparedStatement s = c.prepareStatement(sql); ResultSet r = s.executeQuery()) {
            while (r.next()) out.add(r.getString(1));
        }
        return out;
    }

    static String outcome(Connection c, String sql) {
        try {
            return "served " + column(c, sql).size();
        } catch (SQLException e) {
            return e.getSQLState();
        }
    }

    public static void main(String[] a) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", a[1]);
        p.setProperty("password", a[2]);
        p.setProperty("prepareThreshold", a[5]);
        String sam = a[3], tom = a[4];
        String bad = sam.substring(0, sam.length() - 1) + (sam.endsWith("A") ? "B" : "A");
        try (Connection c = DriverManager.getConnection(a[0], p)) {
            c.setAutoCommit(false);
            for (int round = 0; round < 4; round++) {
                boolean bound = round % 2 == 1;
                setLocal(c, sam, bound);
                List<String> regions = column(c, "SELECT DISTINCT region FROM contacts ORDER BY 1");
                System.out.println("sam " + round + " " + String.join(",", regions));
                c.commit();
                setLocal(c, tom, bound);
                List<String> emails = column(c, "SELECT email FROM contacts ORDER BY id LIMIT 5");
                int tomRegions = column(c, "SELECT DISTINCT region FROM contacts").size();
                System.out.println("tom " + round + " " + tomRegions + " " + emails.stream().allMatch(e -> e.contains("***@")));
                c.commit();
            }
            // Nothing but the end user in a transaction, committed and rolled back: no end user after.
            setLocal(c, tom, false);
            c.commit();
            setLocal(c, sam, true);
            c.rollback();
            System.out.println("none " + outcome(c, "SELECT email FROM contacts LIMIT 1"));
            c.rollback();
            // A rollback after statements ran.
            setLocal(c, sam, false);
            System.out.println("rolled back " + column(c, "SELECT DISTINCT region FROM contacts ORDER BY 1").size());
            c.rollback();
            // A statement error inside the transaction: the rest of it is refused, the next served.
            setLocal(c, tom, true);
            System.out.println("error " + outcome(c, "SELECT 1 / 0"));
            System.out.println("after error " + outcome(c, "SELECT 1"));
            c.rollback();
            // A bad token: refused, the transaction failed until its end, the next one served.
            try {
                setLocal(c, bad, false);
                System.out.println("bad served");
            } catch (SQLException e) {
                System.out.println("bad " + e.getSQLState());
            }
            System.out.println("after bad " + outcome(c, "SELECT 1"));
            c.rollback();
            setLocal(c, sam, false);
            System.out.println("next " + String.join(",", column(c, "SELECT DISTINCT region FROM contacts ORDER BY 1")));
            c.commit();
            // A statement prepared in sam's transactions, executed in tom's.
            try (PreparedStatement s = c.prepareStatement("SELECT count(*) FROM contacts WHERE region = ?")) {
                s.setString(1, "south");
                for (int i = 0; i < 6; i++) {
                    setLocal(c, sam, true);
                    try (ResultSet r = s.executeQuery()) {
                        r.next();
                        if (i == 0) System.out.println("prepared sam " + r.getLong(1));
                    }
                    c.commit();
                }
                setLocal(c, tom, true);
                try (ResultSet r = s.executeQuery()) {
                    r.next();
                    System.out.println("prepared tom served " + (r.getLong(1) > 0));
                } catch (SQLException e) {
                    System.out.println("prepared tom " + e.getSQLState() + " " + e.getMessage().replace('\n', ' '));
                }
                c.rollback();
            }
            setLocal(c, tom, false);
            System.out.println("last " + column(c, "SELECT DISTINCT region FROM contacts").size());
            c.commit();
        }
    }
}
