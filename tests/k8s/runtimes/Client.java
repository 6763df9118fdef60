// A Java app as it runs in an injected pod: no code for proxies or trust, only what the JVM reads
// from JAVA_TOOL_OPTIONS. Prints one JSON object: {"<client> <url>": status or "error: ..."}.
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import javax.net.ssl.HttpsURLConnection;

public class Client {
    public static void main(String[] args) {
        StringBuilder out = new StringBuilder("{");
        HttpClient client = HttpClient.newHttpClient();
        for (String url : args) {
            out.append(entry("urlconnection " + url, urlConnection(url))).append(',');
            out.append(entry("httpclient " + url, httpClient(client, url))).append(',');
        }
        out.setLength(out.length() - 1);
        System.out.println(out.append('}'));
    }

    static String urlConnection(String url) {
        try {
            HttpsURLConnection conn = (HttpsURLConnection) URI.create(url).toURL().openConnection();
            conn.setConnectTimeout(10000);
            conn.setReadTimeout(10000);
            return Integer.toString(conn.getResponseCode());
        } catch (Exception e) {
            return "\"error: " + e.toString().replace('"', '\'') + "\"";
        }
    }

    static String httpClient(HttpClient client, String url) {
        try {
            HttpRequest request = HttpRequest.newBuilder(URI.create(url))
                .timeout(java.time.Duration.ofSeconds(10)).build();
            return Integer.toString(client.send(request, HttpResponse.BodyHandlers.discarding()).statusCode());
        } catch (Exception e) {
            return "\"error: " + e.toString().replace('"', '\'') + "\"";
        }
    }

    static String entry(String key, String value) {
        return "\"" + key + "\": " + value;
    }
}
