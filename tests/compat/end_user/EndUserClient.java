// pgjdbc as an application login acting for two end users on one connection (issue 22): the end
// user set per request with set_config and a bound parameter, statements server-prepared from their
// second execution (prepareThreshold=1), and one prepared statement executed for both end users.
// Run: java -cp postgresql.jar EndUserClient.java URL USER PASSWORD SAM_TOKEN TOM_TOKEN
import java.sql.*;
import java.util.*;

public class EndUserClient {
    static void as(Connection c, String token) throws SQLException {
        try (PreparedStatement s = c.prepareStatement("SELECT set_config('maschera.end_user', ?, false)")) {
            s.setString(1, token);
            s.executeQuery().close();
        }
    }

    static List<String> column(Connection c, String sql) throws SQLException {
        List<String> out = new ArrayList<>();
        try (PreparedStatement s = c.prepareStatement(sql); ResultSet r = s.executeQuery()) {
            while (r.next()) out.add(r.getString(1));
        }
        return out;
    }

    public static void main(String[] a) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", a[1]);
        p.setProperty("password", a[2]);
        p.setProperty("prepareThreshold", "1");
        try (Connection c = DriverManager.getConnection(a[0], p)) {
            for (int round = 0; round < 3; round++) {
                as(c, a[3]);
                System.out.println("sam " + round + " " + String.join(",", column(c, "SELECT DISTINCT region FROM contacts ORDER BY 1")));
                as(c, a[4]);
                List<String> emails = column(c, "SELECT email FROM contacts ORDER BY id LIMIT 5");
                boolean masked = emails.stream().allMatch(e -> e.contains("***@"));
                System.out.println("tom " + round + " " + masked + " " + emails.size());
            }
            try (PreparedStatement s = c.prepareStatement("SELECT count(*) FROM contacts WHERE region = ?")) {
                as(c, a[3]);
                s.setString(1, "south");
                for (int i = 0; i < 2; i++) {
                    try (ResultSet r = s.executeQuery()) {
                        r.next();
                        System.out.println("prepared sam " + r.getLong(1));
                    }
                }
                as(c, a[4]);
                try (ResultSet r = s.executeQuery()) {
                    r.next();
                    System.out.println("prepared tom served " + r.getLong(1));
                } catch (SQLException e) {
                    System.out.println("prepared tom " + e.getSQLState());
                }
            }
            System.out.println("after " + column(c, "SELECT 1").get(0));
        }
    }
}
