r"""Writes the tiny IMDB-format and Amazon-Elec-format samples in this folder.

The reviews below were written by hand for hsa_graph's tests (no text is taken
from the real corpora); they are released under CC0. They mimic the layout of
the real archives so that hsa_graph.datasets.IMDB and AmazonElec run on them:

* imdb/raw/aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt, one review per file,
  with <br /><br /> between paragraphs (as in aclImdb_v1.tar.gz);
* amazon_elec/raw/elec/elec-25k-train.{txt,cat} and elec-test.{txt,cat}: one
  review per line, labels 1 (negative) / 2 (positive) in the .cat files (as in
  elec2.tar.gz).

Run `python make_samples.py` to regenerate them (the outputs are committed).
"""
import os
import os.path as osp

HERE = osp.dirname(osp.abspath(__file__))

MOVIE_POS = [
    "A wonderful film. The acting is superb and the story moved me to tears.",
    "I loved every minute of it. Brilliant direction, great music, and a cast that shines.",
    "One of the best movies of the year. Funny, warm and beautifully shot.<br /><br />Highly recommended.",
    "The script is clever and the lead is fantastic. I would happily watch it again.",
    "What a delight! Great performances and a lovely, moving ending.",
    "Excellent from start to finish. The director knows exactly what he is doing.",
    "A beautiful, touching story. The actors are wonderful and the photography is stunning.",
    "Great fun. I laughed a lot and the kids loved it too.<br /><br />A real gem.",
    "Superb acting, a brilliant plot and a perfect score. A masterpiece.",
    "I enjoyed it immensely. Smart, funny and full of heart.",
    "The best film I have seen in years. Moving, honest and brilliantly acted.",
    "Lovely movie. Great characters, great dialogue, great ending.",
    "An excellent drama with a wonderful cast. I was moved.",
    "Fantastic! The story is gripping and the acting is first rate.",
    "A charming, funny and beautiful film. Loved it.",
    "Brilliant. Every scene works and the music is wonderful.",
]
MOVIE_NEG = [
    "A terrible film. The acting is awful and the story is boring.",
    "I hated it. Bad direction, dull music, and a cast that seems asleep.",
    "One of the worst movies of the year. Stupid, cold and badly shot.<br /><br />Avoid it.",
    "The script is lazy and the lead is dreadful. I walked out after an hour.",
    "What a waste of time! Poor performances and a silly, boring ending.",
    "Awful from start to finish. The director has no idea what he is doing.",
    "A dull, pointless story. The actors are terrible and the photography is ugly.",
    "No fun at all. I never laughed and the kids were bored too.<br /><br />A real mess.",
    "Bad acting, a stupid plot and an annoying score. A disaster.",
    "I disliked it immensely. Dumb, boring and without any heart.",
    "The worst film I have seen in years. Boring, fake and badly acted.",
    "Awful movie. Bad characters, bad dialogue, bad ending.",
    "A poor drama with a terrible cast. I was bored.",
    "Horrible! The story is dull and the acting is awful.",
    "A boring, stupid and ugly film. Hated it.",
    "Dreadful. No scene works and the music is annoying.",
]
ELEC_POS = [
    "Great headphones. The sound is excellent and the battery lasts all day.",
    "Works perfectly with my laptop. Easy to set up and very fast.",
    "Excellent charger, solid build, and it works great. Highly recommended.",
    "I love this keyboard. The keys feel great and it works perfectly.",
    "The camera takes excellent pictures. Great value for the price.",
    "Fast shipping and the cable works great. Very happy with it.",
    "Great speaker with excellent sound. Easy to pair and the battery is great.",
    "This mouse is perfect. Comfortable, precise and reliable.",
    "Excellent monitor. Bright, sharp and easy to set up.",
    "Works great. Excellent quality and a great price.",
    "The router is fast and reliable. Great coverage in the whole house.",
    "Love it. The remote works perfectly and the battery lasts.",
]
ELEC_NEG = [
    "Terrible headphones. The sound is awful and the battery died in an hour.",
    "Does not work with my laptop. Hard to set up and very slow.",
    "Poor charger, cheap build, and it stopped working. Do not buy.",
    "I hate this keyboard. The keys feel cheap and it broke in a week.",
    "The camera takes awful pictures. A waste of money.",
    "The cable arrived broken and never worked. Very disappointed.",
    "Bad speaker with awful sound. Hard to pair and the battery is terrible.",
    "This mouse is useless. Uncomfortable, laggy and unreliable.",
    "Terrible monitor. Dim, blurry and the stand broke.",
    "Stopped working after two days. Cheap quality and a waste of money.",
    "The router is slow and keeps dropping. Awful coverage.",
    "Returned it. The remote never worked and the battery leaked.",
]


# Short templated reviews on top of the hand-written ones, so that a tiny
# model trained for seconds generalises (the smoke test): the sentiment lives
# in a shared set of adjectives, the rest is neutral.
ASPECTS = ['acting', 'story', 'music', 'script', 'ending', 'cast',
           'photography', 'dialogue']
POSITIVE = ['wonderful', 'superb', 'brilliant', 'great', 'excellent',
            'moving', 'beautiful', 'fantastic']
NEGATIVE = ['awful', 'terrible', 'dull', 'boring', 'dreadful', 'poor',
            'ugly', 'stupid']


def templated(adjectives, count):
    reviews = []
    for i in range(count):
        a1, a2 = ASPECTS[i % 8], ASPECTS[(3 * i + 1) % 8]
        j1, j2, j3 = (adjectives[i % 8], adjectives[(i + 3) % 8],
                      adjectives[(5 * i + 2) % 8])
        paragraph = '<br /><br />' if i % 3 == 0 else ' '
        reviews.append(f'The {a1} is {j1}. I thought the {a2} was {j2}.'
                       f'{paragraph}Overall a {j3} film.')
    return reviews


def write_imdb():
    for label, reviews, ratings in (
            ('pos', MOVIE_POS + templated(POSITIVE, 24), (7, 8, 9, 10)),
            ('neg', MOVIE_NEG + templated(NEGATIVE, 24), (1, 2, 3, 4))):
        for i, text in enumerate(reviews):
            # hand-written 0-9 train, 10-15 test; templated 16-31 train,
            # 32-39 test
            split = 'train' if i < 10 or 16 <= i < 32 else 'test'
            folder = osp.join(HERE, 'imdb', 'raw', 'aclImdb', split, label)
            os.makedirs(folder, exist_ok=True)
            with open(osp.join(folder, f'{i}_{ratings[i % 4]}.txt'), 'w') as f:
                f.write(text)


def write_elec():
    folder = osp.join(HERE, 'amazon_elec', 'raw', 'elec')
    os.makedirs(folder, exist_ok=True)
    for split, stem, part in (('train', 'elec-25k-train', slice(0, 8)),
                              ('test', 'elec-test', slice(8, 12))):
        lines, labels = [], []
        for pos, neg in zip(ELEC_POS[part], ELEC_NEG[part]):
            lines += [pos, neg]
            labels += ['2', '1']
        with open(osp.join(folder, stem + '.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
        with open(osp.join(folder, stem + '.cat'), 'w') as f:
            f.write('\n'.join(labels) + '\n')


if __name__ == '__main__':
    write_imdb()
    write_elec()
