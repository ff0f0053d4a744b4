// Prints what Lucene's own classes make of our inputs, for the parity fixtures of lsr's
// Lucene-exact analyzer (tests/lsr/data/lucene_tokens.json) and of Lucene's document-length
// approximation. Run through scripts/lucene/make_fixture.py, which finds the Anserini fatjar
// (bundled with the pyserini sdist) and a Java 21+ runtime.
//
//   java -cp anserini-fatjar.jar LuceneAnalysis.java tokens IN.json OUT.json
//       IN: a JSON array of strings; OUT: a JSON array of token lists, one per string, from
//       Anserini's default analyzer (DefaultEnglishAnalyzer.newDefaultInstance(): Lucene's
//       StandardTokenizer, EnglishPossessiveFilter, LowerCaseFilter, the English stop set and
//       PorterStemFilter, the analysis of Anserini's and Pyserini's BM25 indexes).
//   java -cp anserini-fatjar.jar LuceneAnalysis.java lengths MAX OUT.json
//       OUT: for every length 0..MAX, the length BM25Similarity scores with (SmallFloat's
//       one-byte norm, decoded).
import com.fasterxml.jackson.databind.ObjectMapper;
import io.anserini.analysis.DefaultEnglishAnalyzer;
import java.io.File;
import java.io.StringReader;
import java.util.ArrayList;
import java.util.List;
import org.apache.lucene.analysis.Analyzer;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.tokenattributes.CharTermAttribute;
import org.apache.lucene.util.SmallFloat;

public class LuceneAnalysis {
  public static void main(String[] args) throws Exception {
    ObjectMapper json = new ObjectMapper();
    if (args.length == 3 && args[0].equals("tokens")) {
      String[] texts = json.readValue(new File(args[1]), String[].class);
      List<List<String>> out = new ArrayList<>();
      try (Analyzer analyzer = DefaultEnglishAnalyzer.newDefaultInstance()) {
        for (String text : texts) {
          out.add(analyze(analyzer, text));
        }
      }
      json.writeValue(new File(args[2]), out);
    } else if (args.length == 3 && args[0].equals("lengths")) {
      int max = Integer.parseInt(args[1]);
      int[] decoded = new int[max + 1];
      for (int n = 0; n <= max; n++) {
        decoded[n] = SmallFloat.byte4ToInt(SmallFloat.intToByte4(n));
      }
      json.writeValue(new File(args[2]), decoded);
    } else {
      System.err.println("usage: LuceneAnalysis tokens IN.json OUT.json | lengths MAX OUT.json");
      System.exit(2);
    }
  }

  static List<String> analyze(Analyzer analyzer, String text) throws Exception {
    List<String> tokens = new ArrayList<>();
    try (TokenStream stream = analyzer.tokenStream("contents", new StringReader(text))) {
      CharTermAttribute term = stream.addAttribute(CharTermAttribute.class);
      stream.reset();
      while (stream.incrementToken()) {
        tokens.add(term.toString());
      }
      stream.end();
    }
    return tokens;
  }
}
